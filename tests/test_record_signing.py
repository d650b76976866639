"""Signed promotion records: `granvae models` tells a granvae promotion from a forged tag.

The unit tests change one field, the key or the model name of a signed record and watch the
check fail; the integration test promotes on a real `mlflow server`, then forges what issue 14
measured (an alias move with a forged history entry, a forged metrics tag) through the plain
MLflow client, as anyone with registry write access could.
"""

from __future__ import annotations

import json

import pytest
from signing_fixtures import make_keys
from sweep_fixtures import fast_store, unique

from granvae.signing import SIGNING_KEY_ENV, rotate_keys
from granvae.tracking.record_signing import record_signer, sign_record, trusted_keys

ENTRY = {"action": "promote", "to_version": 3, "from_version": 2, "by": "carol",
         "at": "2026-01-01T00:00:00+00:00", "metrics": {"auroc": 0.91}}  # fmt: skip


@pytest.fixture
def key(tmp_path, monkeypatch):
    private, public = make_keys(tmp_path / "keys")
    monkeypatch.setenv("GRANVAE_KEYS_DIR", str(public.parent))
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    return private


def test_a_signed_record_verifies_and_any_change_breaks_it(key, tmp_path):
    signed = sign_record(ENTRY, "inspector", key)
    keys = trusted_keys()
    assert record_signer(signed, "inspector", keys) == signed["key_id"]
    assert record_signer(signed, "other-model", keys) is None  # replayed onto another model
    assert record_signer({**signed, "to_version": 4}, "inspector", keys) is None
    assert record_signer({**signed, "metrics": {"recall_at_far": 0.99}}, "inspector", keys) is None
    assert record_signer(ENTRY, "inspector", keys) is None  # unsigned
    forger, _ = make_keys(tmp_path / "forger")
    assert record_signer(sign_record(ENTRY, "inspector", forger), "inspector", keys) is None


def test_records_signed_before_a_rotation_still_verify(key):
    signed = sign_record(ENTRY, "inspector", key)
    rotate_keys()
    assert record_signer(signed, "inspector", trusted_keys()) == signed["key_id"]


@pytest.mark.slow
def test_models_check_names_a_forged_history_entry_and_metrics_tag(mlflow_server, tmp_path, key):
    from granvae.tracking.promotion import HISTORY_TAG, champion_check, history, promote
    from granvae.tracking.registry import COMPLETE, METRICS_TAG

    store, name = fast_store(mlflow_server, tmp_path), unique("signed-records")
    client = store.client
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment(name))
    for _ in range(2):
        source = f"runs:/{run.info.run_id}/bundle"
        mv = client.create_model_version(name, source, run_id=run.info.run_id)
        client.set_model_version_tag(name, mv.version, COMPLETE, "true")
        metrics = json.dumps({"recall_at_far": 0.4})
        client.set_model_version_tag(name, mv.version, METRICS_TAG, metrics)
    promote(name, version=1, store=store, user="alice", reason="first")
    assert champion_check(name, store=store) == "champion version 1: moved by granvae; gates passed"

    client.set_model_version_tag(name, "1", METRICS_TAG, json.dumps({"recall_at_far": 0.99}))
    assert "metrics tag changed since the signed promotion" in champion_check(name, store=store)
    client.set_model_version_tag(name, "1", METRICS_TAG, json.dumps({"recall_at_far": 0.4}))

    # The attack: move the alias and append a plausible (unsigned or copied) history entry.
    forged = {**history(name, store=store)[-1], "to_version": 2, "from_version": 1}
    client.set_registered_model_alias(name, "champion", "2")
    client.set_registered_model_tag(name, HISTORY_TAG,
                                    json.dumps(history(name, store=store) + [forged]))  # fmt: skip
    line = champion_check(name, store=store)
    assert "MOVED OUTSIDE granvae" in line and "not signed by a trusted key" in line
