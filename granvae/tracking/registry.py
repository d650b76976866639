"""Registering the winner as a model version: complete or absent, never half-done.

Order matters because an edge device follows an alias the moment it moves:
1. stage every file locally (a missing file fails here, before the server sees anything);
2. upload them to the winner's child run, then create the version (source = that folder)
   with `granvae.complete=false`;
3. tags, manifest URI, a check that the files are really listed on the server, then
   `granvae.complete=true`, and only then the alias `challenger`.
Any exception after step 2 deletes the version. If the server died so the delete could not
run, the rerun deletes that orphan (same sweep id + candidate, incomplete) before it starts.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from granvae.metrics import HEADLINE as HEADLINE_METRICS
from granvae.select import Decision, decision_markdown
from granvae.signing import SIGNATURE_FILE, sign_bundle
from granvae.tracking.compare import EVAL_DIR, EVAL_FILE, EVAL_TAG, SCORE_TAG, write_eval_set
from granvae.tracking.provenance import PROVENANCE_DIR, code_tags, write_params
from granvae.tracking.runs import (
    CANDIDATE_ID,
    SWEEP_ID,
    SweepInfo,
    log_artifact_dir,
    log_artifact_files,
    log_sweep,
    read_sweep,
)
from granvae.tracking.staging import stage_bundle, stage_torch
from granvae.tracking.store import RegistrationRefused, Store, TrackingSettings

MODEL_NAME = "granvae-inspector"
PARAMS_TAG = "granvae.params"
COMPLETE = "granvae.complete"
METRICS_TAG = "granvae.metrics"
GATES_TAG = "granvae.gates_passed"
ATTEMPT = "granvae.attempt"
HEADLINE = (*HEADLINE_METRICS, "onnx_parity")
DESCRIPTION_LIMIT = 5000  # model_versions.description is VARCHAR(5000)
Progress = Callable[[str], None]


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _fmt(value: Any) -> str:
    num = _number(value)
    return f"{num:.6g}" if num is not None else str(value)


def versions(store: Store, name: str) -> list[ModelVersion]:
    """Every version of `name` (aliases NOT reliable here: read them via aliases())."""
    found = store.call(
        "search model versions", store.client.search_model_versions, f"name = '{name}'"
    )
    return sorted(found, key=lambda v: int(v.version))


def aliases(store: Store, name: str) -> dict[str, int]:
    """alias -> version, from get_registered_model (search results leave aliases empty)."""
    try:
        model = store.call("get registered model", store.client.get_registered_model, name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    raw = model.aliases or {}
    if isinstance(raw, dict):
        return {k: int(v) for k, v in raw.items()}
    return {a.alias: int(a.version) for a in raw}


def discard_version(store: Store, name: str, version: str) -> bool:
    """Best effort: an incomplete version must not survive; False if the server is gone."""
    try:
        store.call("delete incomplete version", store.client.delete_model_version, name, version)
        return True
    except Exception:  # noqa: BLE001 - the rerun removes the orphan (see module doc)
        return False


def _previous(store: Store, name: str, sweep_id: str, candidate: str) -> ModelVersion | None:
    """A complete version of this very candidate, after removing incomplete leftovers."""
    complete = None
    for v in versions(store, name):
        if v.tags.get(SWEEP_ID) != sweep_id or v.tags.get(CANDIDATE_ID) != candidate:
            continue
        if v.tags.get(COMPLETE) == "true":
            complete = complete or v
        else:
            discard_version(store, name, v.version)
    return complete


def _drop_twins(store: Store, name: str, token: str, keep: str) -> None:
    """A create retried after a timeout may have made two versions; keep the one returned."""
    for v in versions(store, name):
        if v.tags.get(ATTEMPT) == token and v.version != keep:
            discard_version(store, name, v.version)


def _winner_run(store: Store, experiment: str, info: SweepInfo, winner: str) -> tuple[str, str]:
    """(Re)log the sweep first: a no-op when complete, and it attaches the decision table.
    Returns the winner's run id and the sweep's parent run id."""
    logged = log_sweep(info.directory, experiment, info.data_version, store=store)
    return logged["children"][winner], logged["parent_run_id"]


def _tag_runs(store: Store, run_ids: tuple[str, ...], tags: dict[str, str]) -> None:
    """Caller's tags (e.g. why the retrain ran) on the sweep's parent and the winner's run."""
    for run_id in run_ids:
        for key, value in tags.items():
            store.call("set tag", store.client.set_tag, run_id, key, value)


def _version_tags(info: SweepInfo, row: dict, decision: Decision, extra: dict) -> dict[str, str]:
    metrics = {k: _number(v) for k, v in row.items() if _number(v) is not None}
    tags = {k: _fmt(row[k]) for k in HEADLINE if _number(row.get(k)) is not None}
    for key in ("objective", "granularity", "beta", "latent_dim", "seed", "estimator"):
        if row.get(key) is not None:
            tags[key] = _fmt(row[key])
    tags.update(
        {
            SWEEP_ID: info.sweep_id,
            CANDIDATE_ID: str(row["candidate_id"]),
            "data_version": str(info.data_version),
            GATES_TAG: "true",
            METRICS_TAG: json.dumps(metrics),
            "granvae.why": decision.why[:5000],
            COMPLETE: "false",
        }
    )
    tags.update({k: str(v) for k, v in extra.items() if v is not None})
    return tags


def fit_description(body: str, log_lines: list[str], limit: int = DESCRIPTION_LIMIT) -> str:
    """Decision table + promotion log within the column limit; the table is cut first."""
    log_lines = log_lines[-20:]
    tail = ("\n\n### Promotions\n" + "\n".join(f"- {line}" for line in log_lines)) * bool(log_lines)
    room = limit - len(tail)
    if len(body) > room:
        body = body[: max(0, room - 60)].rsplit("\n", 1)[0] + "\n\n(table truncated; see the run)"
    return body + tail


def _check_listed(store: Store, run_id: str, artifact: str, required: list[str]) -> None:
    listed = store.call("list artifacts", store.client.list_artifacts, run_id, artifact)
    names = {Path(f.path).name for f in listed}
    missing = [n for n in required if n not in names]
    if missing:
        raise RegistrationRefused(f"uploaded {artifact}/ lacks {missing}; version not completed")


def _finish(store: Store, name: str, mv: ModelVersion, staged: Path, run_id: str) -> None:
    """Everything between 'version exists' and 'alias points at it'."""
    manifest = staged / "manifest.json"
    if manifest.exists():  # the bundle learns the URI it is registered under
        data = json.loads(manifest.read_text())
        data["mlflow_model_uri"] = f"models:/{name}/{mv.version}"
        manifest.write_text(json.dumps(data, indent=2))
        sign_bundle(staged)  # the manifest changed: sign it again (granvae.signing)
        log_artifact_files(store, run_id, [manifest, staged / SIGNATURE_FILE], staged.name)
    required = ["MLmodel", "model.onnx", "manifest.json"] if manifest.exists() else ["MLmodel"]
    _check_listed(store, run_id, staged.name, required)
    store.call(
        "tag version", store.client.set_model_version_tag, name, mv.version, COMPLETE, "true"
    )
    store.call("set alias", store.client.set_registered_model_alias, name, "challenger", mv.version)


MODEL_DESCRIPTION = (
    "granvae visual-inspection model (factorized VAE). Aliases: `challenger` = the newest "
    "registered sweep winner, awaiting promotion; `champion` = what edge devices pull "
    "(moved only by `granvae promote`/`rollback` or a person here). Each version's description "
    "holds its decision table; the tag granvae.promotion_history records every champion move."
)


def _ensure_model(store: Store, name: str) -> None:
    try:
        store.call(
            "create registered model", store.client.create_registered_model, name,
            description=MODEL_DESCRIPTION,
        )  # fmt: skip
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def register_winner(
    sweep_dir: Path | str,
    decision: Decision,
    model_name: str = MODEL_NAME,
    bundle_dir: Path | str | None = None,
    data_version: str | None = None,
    git_commit: str | None = None,
    *,
    store: Store | None = None,
    experiment: str = "granvae",
    progress: Progress | None = None,
    tags: dict[str, str] | None = None,
) -> int:
    """The decision's winner as a complete version with alias challenger; returns its number.

    `tags` (e.g. granvae.trigger, why the retrain ran) go on the new version and on the
    sweep's parent and winner runs. A version this sweep registered before keeps the tags it
    was created with: they describe the retrain that made it."""
    if decision.winner is None:
        raise RegistrationRefused(f"nothing registered: {decision.why}")
    store = store or Store(TrackingSettings())
    say = progress or (lambda _event: None)
    info = read_sweep(sweep_dir, data_version)
    row = next((r for r in info.rows if r["candidate_id"] == decision.winner), None)
    if row is None:
        raise RegistrationRefused(f"winner {decision.winner} is not in {info.directory}")
    with tempfile.TemporaryDirectory(prefix="granvae-register-") as tmp:
        cdir = info.directory / "candidates" / decision.winner
        staged = (
            stage_bundle(Path(bundle_dir), Path(tmp), row)
            if bundle_dir
            else stage_torch(cdir, Path(tmp), row)
        )
        run_id, parent_id = _winner_run(store, experiment, info, decision.winner)
        say("run_found")
        found = _previous(store, model_name, info.sweep_id, decision.winner)
        if found is not None:  # complete already; only a crash before the alias is repaired
            aliased = int(found.version) in aliases(store, model_name).values()
            if not aliased and "granvae.promoted_at" not in found.tags:
                _finish(store, model_name, found, staged, run_id)
            return int(found.version)
        uploads, extra = _provenance(info, Path(tmp))
        chosen = _chosen_rule(cdir)  # the candidate's own rule (granvae.rule_choice)
        if chosen:
            extra[SCORE_TAG] = chosen
        code = code_tags()
        extra.update(code, git_commit=git_commit or code["granvae.code_commit"])
        extra["granvae.flavor"] = staged.name
        extra.update(tags or {})
        _tag_runs(store, (parent_id, run_id), tags or {})
        return _create(store, model_name, info, row, decision, staged, run_id, extra, say, uploads)


def _chosen_rule(candidate_dir: Path) -> str | None:
    """The rule the candidate was evaluated with (scoring.json), which per-line choice may
    have set to another than params' evaluation.score."""
    path = candidate_dir / "scoring.json"
    try:
        return str(json.loads(path.read_text())["rule"]) if path.is_file() else None
    except (ValueError, KeyError):
        return None


def _provenance(info: SweepInfo, tmp: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Files uploaded beside the model (evaluation set, resolved params) and their tags.

    The evaluation set is what promotion scores the champion on (granvae.tracking.compare);
    it is absent when the sweep's data folder is gone, and promotion then says so.
    """
    settings = info.meta.get("settings") or {}
    evaluation = settings.get("evaluation") or {}
    uploads: dict[str, Path] = {}
    tags = {SCORE_TAG: str(evaluation.get("score") or "neg_elbo")}
    data_dir = info.meta.get("data_dir")
    far = float(evaluation.get("false_alarm_rate") or 0.01)
    eval_set = write_eval_set(Path(data_dir), tmp / EVAL_DIR, far) if data_dir else None
    if eval_set is not None:
        uploads[EVAL_DIR] = eval_set
        tags[EVAL_TAG] = f"{EVAL_DIR}/{EVAL_FILE}"
    resolved = info.directory / "params.resolved.yaml"
    params = resolved if resolved.is_file() else write_params(settings, tmp / PROVENANCE_DIR)
    uploads[PROVENANCE_DIR] = params
    tags[PARAMS_TAG] = f"{PROVENANCE_DIR}/{params.name}"
    return uploads, tags


def _create(
    store: Store,
    name: str,
    info: SweepInfo,
    row: dict,
    decision: Decision,
    staged: Path,
    run_id: str,
    extra: dict,
    say: Progress,
    uploads: dict[str, Path] | None = None,
) -> int:
    log_artifact_dir(store, run_id, staged, staged.name)
    for folder, path in (uploads or {}).items():
        log_artifact_files(store, run_id, [path], folder)
    say("artifacts_uploaded")
    _ensure_model(store, name)
    run = store.call("get run", store.client.get_run, run_id)
    source = f"{run.info.artifact_uri.rstrip('/')}/{staged.name}"
    description = fit_description(decision_markdown(decision), [])
    token = uuid.uuid4().hex  # tells our own retried create apart from anyone else's
    mv = store.call(
        "create model version",
        store.client.create_model_version,
        name,
        source,
        run_id,
        tags={**_version_tags(info, row, decision, extra), ATTEMPT: token},
        description=description,
    )
    try:
        say("version_created")
        _drop_twins(store, name, token, mv.version)
        _finish(store, name, mv, staged, run_id)
    except BaseException:
        discard_version(store, name, mv.version)
        raise
    say("alias_set")
    return int(mv.version)


def _iso(ms: int | None) -> str | None:
    return (
        dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds") if ms else None
    )


def list_versions(model_name: str = MODEL_NAME, *, store: Store | None = None) -> list[dict]:
    """Newest first: version, aliases, headline metrics, data version, complete or not."""
    store = store or Store(TrackingSettings())
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases(store, model_name).items():
        by_version.setdefault(version, []).append(alias)
    try:
        found = versions(store, model_name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    out = []
    for v in reversed(found):
        row = {"version": int(v.version), "aliases": sorted(by_version.get(int(v.version), []))}
        row.update({k: _number(v.tags.get(k)) for k in HEADLINE})
        for key in (
            "granularity",
            "beta",
            "latent_dim",
            "data_version",
            "git_commit",
            "granvae.code_dirty",
            CANDIDATE_ID,
            SWEEP_ID,
            "granvae.promoted_by",
            "granvae.promoted_at",
        ):
            row[key.removeprefix("granvae.")] = v.tags.get(key)
        row["status"] = "complete" if v.tags.get(COMPLETE) == "true" else "incomplete"
        row["created"] = _iso(v.creation_timestamp)
        row["run_id"] = v.run_id
        row["source"] = v.source
        out.append(row)
    return out
