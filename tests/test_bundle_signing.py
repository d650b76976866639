"""Signed bundles: the exporter signs every file; verify, serve and /reload refuse any change.

Real keys, a real onnxruntime session and a real loopback server: a tampered manifest (the
threshold raised so every defect passes), a changed statistics file, a foreign or broken
signature and an unsigned bundle are each refused, and a server keeps scoring with the bundle it
had. The key files are 0600 from the moment they exist (a watcher thread stats them as they
appear).
"""

from __future__ import annotations

import json
import os
import stat
import threading

import numpy as np
import pytest
from edge_fixtures import build_model, http, png_bytes, run_cli
from granvae_edge.bundle import BundleError, load_bundle
from granvae_edge.calibrate import CalibrationError, signing_key_for
from granvae_edge.server import make_server
from granvae_edge.signature import TRUSTED_KEYS_ENV, TrustStore
from signing_fixtures import STATS_FILE, make_keys, make_signed_bundle, set_threshold

from granvae.signing import (
    PRIVATE_FILE,
    SigningKeyError,
    init_keys,
    load_private_key,
    rotate_keys,
    sign_bundle,
)

DEFECT = png_bytes(np.full((32, 32), 255, np.uint8))  # fixture score 25 > threshold 5


@pytest.fixture
def keys(tmp_path):
    return make_keys(tmp_path / "keys")


@pytest.fixture
def signed(tmp_path, keys):
    return make_signed_bundle(tmp_path / "bundle", keys[0])


def _foreign_signature(bundle, tmp_path):
    other, _ = make_keys(tmp_path / "other-keys")
    sign_bundle(bundle, other)


def _garbage_signature(bundle, _tmp_path):
    doc = json.loads((bundle / "manifest.sig").read_text())
    doc["signature"] = doc["signature"][:-8] + "AAAAAAA="
    (bundle / "manifest.sig").write_text(json.dumps(doc))


TAMPERS = {
    "manifest": (lambda b, _t: set_threshold(b, 1e6), "bad signature"),
    "stats": (lambda b, _t: (b / STATS_FILE).write_bytes(b"forged statistics\n"),
              "sha256 mismatch"),  # fmt: skip
    "foreign-key": (_foreign_signature, "not a trusted one"),
    "bad-signature": (_garbage_signature, "bad signature"),
    "unsigned": (lambda b, _t: (b / "manifest.sig").unlink(), "unsigned"),
}


def test_signed_bundle_verifies_and_names_its_key(signed, keys):
    result = run_cli("verify", str(signed), "--trusted-key", str(keys[1]))
    assert result.returncode == 0, result.stderr
    assert "signed by trusted key" in result.stdout
    unchecked = run_cli("verify", str(signed))  # the demo: no key configured, says so
    assert unchecked.returncode == 0 and "signature NOT checked" in unchecked.stdout


@pytest.mark.parametrize("kind", ["manifest", "stats", "bad-signature"])
def test_verify_cli_refuses_a_changed_bundle(signed, keys, tmp_path, kind):
    tamper, why = TAMPERS[kind]
    tamper(signed, tmp_path)
    result = run_cli("verify", str(signed), "--trusted-key", str(keys[1]))
    assert result.returncode == 1 and why in result.stderr, result.stderr


@pytest.mark.parametrize("kind", sorted(TAMPERS))
def test_load_refuses_every_tamper_with_keys_from_the_environment(
    signed, keys, tmp_path, monkeypatch, kind
):
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(keys[1].parent))  # a folder of *.pub.pem
    assert load_bundle(signed).signed_by is not None
    tamper, why = TAMPERS[kind]
    tamper(signed, tmp_path)
    with pytest.raises(BundleError, match=why):
        load_bundle(signed)


def test_hashes_are_checked_even_without_a_trusted_key(signed):
    (signed / STATS_FILE).write_bytes(b"forged statistics\n")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        load_bundle(signed)


@pytest.mark.parametrize("kind", ["manifest", "stats", "foreign-key"])
def test_reload_refuses_a_changed_bundle_and_keeps_serving(signed, keys, tmp_path, kind):
    server = make_server(signed, "127.0.0.1", 0, intra_op_threads=1,
                         trust=TrustStore.from_paths([keys[1]]))  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        tamper, why = TAMPERS[kind]
        tamper(signed, tmp_path)
        code, body = http("POST", url + "/reload")
        assert code == 409 and why in body["error"], body
        code, verdict = http("POST", url + "/score", DEFECT)
        assert code == 200 and verdict["threshold"] == 5.0 and verdict["decision"] is True
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_serve_refuses_to_start_on_a_tampered_bundle(signed, keys):
    set_threshold(signed, 1e6)
    result = run_cli("serve", "--bundle", str(signed), "--port", "0", "--trusted-key",
                     str(keys[1]))  # fmt: skip
    assert result.returncode == 2 and "bad signature" in result.stderr


def test_calibration_on_a_trusting_device_needs_a_trusted_signing_key(signed, keys, tmp_path):
    trust = TrustStore.from_paths([keys[1]])
    with pytest.raises(CalibrationError, match="--signing-key"):
        signing_key_for(None, trust)
    other = make_keys(tmp_path / "other")[1].parent / PRIVATE_FILE
    with pytest.raises(CalibrationError, match="not one of the device's trusted keys"):
        signing_key_for(str(other), trust)
    good = tmp_path / "good"
    good.mkdir()
    for k in range(20):
        (good / f"{k}.png").write_bytes(png_bytes(np.full((32, 32), 120 + k, np.uint8)))
    result = run_cli("calibrate", "--bundle", str(signed), "--good-images", str(good),
                     "--trusted-key", str(keys[1]),
                     "--signing-key", str(keys[1].parent / PRIVATE_FILE))  # fmt: skip
    assert result.returncode == 0, result.stderr
    bundle = load_bundle(signed, trust=trust)
    assert bundle.revision == 2 and bundle.threshold < 5.0


def test_export_lists_and_signs_every_file(tmp_path, keys):
    import onnx

    from granvae.export.bundle import write_bundle

    onnx.save(build_model(16, 16), str(tmp_path / "m.onnx"))
    (tmp_path / "stats.npz").write_bytes(b"stats")
    manifest = write_bundle(
        tmp_path / "bundle", tmp_path / "m.onnx", groups=[[0], [1], [0], [1]],
        threshold={"value": 1.0, "false_alarm_rate": 0.01, "n_images": 10},
        class_names=["good", "defect"], candidate={"granularity": 1}, data_version="v1",
        stats_path=tmp_path / "stats.npz", signing_key=keys[0],
    )  # fmt: skip
    assert set(manifest["files"]) == {"model.onnx", "score_stats.npz"}
    bundle = load_bundle(tmp_path / "bundle", trust=TrustStore.from_paths([keys[1]]))
    assert bundle.signed_by is not None
    (tmp_path / "bundle" / "score_stats.npz").write_bytes(b"other stats")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        load_bundle(tmp_path / "bundle", trust=TrustStore.from_paths([keys[1]]))


def _watch_modes(folder, stop, seen):
    """Stat every file in ``folder`` as fast as possible, recording each mode observed."""
    while not stop.is_set():
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            try:
                seen.add((name, stat.S_IMODE(os.stat(folder / name).st_mode)))
            except FileNotFoundError:
                pass


def test_private_keys_are_0600_from_creation_under_a_watcher(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    stop, seen = threading.Event(), set()
    watcher = threading.Thread(target=_watch_modes, args=(folder, stop, seen))
    old_umask = os.umask(0o000)  # the most permissive umask a caller could have
    watcher.start()
    try:
        for _ in range(20):
            init_keys(folder)
            rotate_keys(folder)
            (folder / PRIVATE_FILE).unlink()
    finally:
        os.umask(old_umask)
        stop.set()
        watcher.join(timeout=10)
    private_modes = {mode for name, mode in seen if "signing_key.pem" in name}
    assert private_modes == {0o600}, seen


def test_rotation_retires_the_old_public_key_and_refuses_open_keys(tmp_path, signed, keys):
    old_id = load_bundle(signed, trust=TrustStore.from_paths([keys[1]])).signed_by
    retired_id, pair = rotate_keys(keys[1].parent)
    assert retired_id == old_id and pair.key_id != old_id
    # A device trusting the whole folder (current + retired) still accepts the old bundle.
    trust = TrustStore.from_paths([pair.public, keys[1].parent / "retired"])
    assert load_bundle(signed, trust=trust).signed_by == old_id
    with pytest.raises(SigningKeyError, match="exists"):
        init_keys(keys[1].parent)
    pair.private.chmod(0o644)
    with pytest.raises(SigningKeyError, match="readable by others"):
        load_private_key(pair.private)


def test_keys_cli_makes_shows_and_rotates_a_pair(tmp_path):
    from typer.testing import CliRunner

    from granvae.cli import app

    runner, folder = CliRunner(), tmp_path / "keys"
    made = runner.invoke(app, ["keys", "init", "--dir", str(folder)])
    assert made.exit_code == 0 and "--trusted-key" in made.output, made.output
    assert stat.S_IMODE((folder / PRIVATE_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    again = runner.invoke(app, ["keys", "init", "--dir", str(folder)])
    assert again.exit_code == 2 and "keys rotate" in again.output
    old = runner.invoke(app, ["keys", "show", "--dir", str(folder)]).output.split()[1].rstrip(":")
    rotated = runner.invoke(app, ["keys", "rotate", "--dir", str(folder)])
    assert rotated.exit_code == 0 and f"retired key {old}" in rotated.output
    assert (folder / "retired" / f"{old}.pub.pem").is_file()
