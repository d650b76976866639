"""Moving `champion`: an explicit act, checked, and written down.

MLflow keeps no record of alias moves, yet "who put this model on the line, when, why, and
what did its numbers look like then" is the first question after a bad shift. So every
promote/rollback leaves three traces: tags on the version, a line in its description, and an
entry in a JSON history kept on the registered model (`granvae.promotion_history`, trimmed to
fit the registry's 5000-character tag column). Rollback walks that history backwards.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from granvae.config import PromotionConfig
from granvae.select import SelectionPolicy
from granvae.tracking.compare import CannotCompare, NonFiniteScores, compare
from granvae.tracking.record_signing import record_signer, sign_record, trusted_keys
from granvae.tracking.registry import (
    COMPLETE,
    GATES_TAG,
    HEADLINE,
    METRICS_TAG,
    MODEL_NAME,
    aliases,
    fit_description,
)
from granvae.tracking.store import PromotionRefused, Store, TrackingSettings

HISTORY_TAG = "granvae.promotion_history"
HISTORY_LIMIT = 5000  # registered_model_tags.value is VARCHAR(5000)
HISTORY_MAX_ENTRIES = 50
CHAMPION, CHALLENGER = "champion", "challenger"
_LOG_MARK = "\n\n### Promotions\n"


@dataclass
class PromotionRecord:
    """One alias move, as kept in the history."""

    action: str  # "promote" | "rollback"
    to_version: int
    from_version: int | None
    by: str
    at: str
    reason: str = ""
    forced: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""
    comparison: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        came = f"v{self.from_version}" if self.from_version else "no champion"
        forced = " [forced]" if self.forced else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.at} {self.action} to champion by {self.by} (from {came}){forced}{why}"


def _get(store: Store, name: str, version: int | str) -> ModelVersion:
    return store.call("get model version", store.client.get_model_version, name, str(version))


def _metrics(mv: ModelVersion) -> dict[str, float]:
    try:
        return json.loads(mv.tags.get(METRICS_TAG, "{}"))
    except json.JSONDecodeError:
        return {}


def _gate_problems(mv: ModelVersion, policy: SelectionPolicy | None) -> list[str]:
    if mv.tags.get(GATES_TAG) == "false":
        return [f"version {mv.version} failed the selection gates when it was registered"]
    if policy is None:
        return []
    row = {"status": "finished", **_metrics(mv)}
    failed = [g.label for g in policy.gates if g.applies([row]) and not g.check(row)[1]]
    return [f"version {mv.version} fails the gates {failed}"] if failed else []


def _recorded_worse(mv: ModelVersion, champ: ModelVersion, metric: str) -> list[str]:
    """The fallback when no shared evaluation set exists: the registered numbers, which
    are only comparable when both were measured on the same data version."""
    new, old = _metrics(mv), _metrics(champ)
    for key in (metric, "elbo"):
        a, b = new.get(key), old.get(key)
        if a is None or b is None or abs(a - b) <= 1e-9:
            continue
        if a < b:
            return [
                f"version {mv.version} is worse than champion version {champ.version} on the "
                f"same data ({mv.tags.get('data_version')}): {key} {a:.6g} < {b:.6g}"
            ]
        return []
    return []


def _versus(
    store: Store,
    mv: ModelVersion,
    champ: ModelVersion | None,
    metric: str,
    rule: PromotionConfig | None = None,
) -> tuple[list[str], str, dict[str, Any]]:
    """(problems, note, comparison): both scored on the challenger's evaluation images.

    Refused unless the challenger is shown not worse than the champion by more than
    ``rule.margin`` (paired non-inferiority), when a model scores NaN/inf, or when no fair
    comparison is possible across different data versions. Every problem is forceable.
    """
    if champ is None:
        return [], "", {}
    try:
        result = compare(store, mv, champ, rule)
    except NonFiniteScores as err:
        return [f"{err}; no fair comparison with champion version {champ.version}"], "", {}
    except CannotCompare as err:
        if mv.tags.get("data_version") == champ.tags.get("data_version"):
            note = f"compared on registered metrics (same data version; {err})"
            return _recorded_worse(mv, champ, metric), note, {}
        return [
            f"version {mv.version} cannot be compared with champion version {champ.version} "
            f"on the same images ({err}); they were evaluated on different data "
            f"({mv.tags.get('data_version')} vs {champ.tags.get('data_version')})"
        ], "", {}
    note = result.describe()
    if result.worse:
        return [
            f"version {mv.version} is not shown to be within the margin of champion version "
            f"{champ.version} {note}"
        ], note, result.as_dict()
    return [], note, result.as_dict()


def champion(store: Store, name: str) -> ModelVersion | None:
    version = aliases(store, name).get(CHAMPION)
    return _get(store, name, version) if version is not None else None


def history(name: str = MODEL_NAME, *, store: Store | None = None) -> list[dict[str, Any]]:
    """The promotion history kept on the registered model, oldest first."""
    store = store or Store(TrackingSettings())
    model = store.call("get registered model", store.client.get_registered_model, name)
    raw = (model.tags or {}).get(HISTORY_TAG)
    return json.loads(raw) if raw else []


def _trimmed(entries: list[dict]) -> str:
    entries = entries[-HISTORY_MAX_ENTRIES:]
    text = json.dumps(entries, separators=(",", ":"))
    while len(text) > HISTORY_LIMIT and len(entries) > 1:
        entries = entries[1:]
        text = json.dumps(entries, separators=(",", ":"))
    return text


def _record(store: Store, name: str, target: ModelVersion, rec: PromotionRecord) -> None:
    """Version tags, a description line, the model-level history entry."""
    call, client = store.call, store.client
    for key, value in (
        ("promoted_by", rec.by),
        ("promoted_at", rec.at),
        ("promotion_reason", rec.reason),
        ("promotion_forced", str(rec.forced)),
        ("promotion_check", rec.note[:5000]),
    ):
        call(
            "tag version",
            client.set_model_version_tag,
            name,
            target.version,
            f"granvae.{key}",
            value,
        )
    body, _, log = (target.description or "").partition(_LOG_MARK)
    lines = [ln.removeprefix("- ") for ln in log.splitlines() if ln.strip()] + [rec.line()]
    call(
        "update description",
        client.update_model_version,
        name,
        target.version,
        fit_description(body, lines),
    )
    entries = history(name, store=store) + [sign_record(asdict(rec), name)]  # record_signing
    call("record history", client.set_registered_model_tag, name, HISTORY_TAG, _trimmed(entries))


def _move(store: Store, name: str, target: ModelVersion, rec: PromotionRecord) -> None:
    store.call("set alias", store.client.set_registered_model_alias, name, CHAMPION, target.version)
    if aliases(store, name).get(CHALLENGER) == int(target.version):
        store.call("drop alias", store.client.delete_registered_model_alias, name, CHALLENGER)
    _record(store, name, target, rec)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _target(store: Store, name: str, version: int | None) -> ModelVersion:
    if version is None:
        challenger = aliases(store, name).get(CHALLENGER)
        if challenger is None:
            raise PromotionRefused(f"{name} has no challenger; pass --version N")
        version = challenger
    try:
        mv = _get(store, name, version)
    except MlflowException as err:
        raise PromotionRefused(f"{name} version {version} does not exist") from err
    if mv.tags.get(COMPLETE) != "true":
        raise PromotionRefused(f"{name} version {version} is incomplete; it can never be champion")
    return mv


def promote(
    model_name: str = MODEL_NAME,
    version: int | None = None,
    force: bool = False,
    reason: str = "",
    user: str | None = None,
    policy: SelectionPolicy | None = None,
    compare_metric: str = "recall_at_far",
    *,
    store: Store | None = None,
    rule: PromotionConfig | None = None,
) -> PromotionRecord:
    """Point `champion` at `version` (default: the challenger) unless the checks refuse.

    ``rule`` is params.yaml ``promotion:`` (the non-inferiority margin and confidence)."""
    store = store or Store(TrackingSettings())
    target = _target(store, model_name, version)
    current = champion(store, model_name)
    if current is not None and current.version == target.version:
        raise PromotionRefused(f"{model_name} version {target.version} is already champion")
    problems = _gate_problems(target, policy)
    worse, note, comparison = _versus(store, target, current, compare_metric, rule)
    problems += worse
    if problems and not force:
        raise PromotionRefused("; ".join(problems) + " (--force overrides, and is recorded)")
    if problems and not reason.strip():
        raise PromotionRefused("; ".join(problems) + " (--force needs --reason: it is recorded)")
    if problems:
        note = "forced over: " + "; ".join(problems)
    rec = PromotionRecord(
        "promote",
        int(target.version),
        int(current.version) if current else None,
        user or getpass.getuser(),
        _now(),
        reason,
        bool(problems),
        {k: v for k, v in _metrics(target).items() if k in HEADLINE},
        note,
        comparison,
    )
    _move(store, model_name, target, rec)
    return rec


def previous_champion(entries: list[dict[str, Any]], current: int) -> int | None:
    """Whom `current` replaced, by the history; walking back through repeated rollbacks.

    If `current` was made champion outside granvae (a person in the MLflow UI), the history
    has no entry for it; the last champion granvae recorded is then the previous one.
    """
    for entry in reversed(entries):
        if entry.get("action") == "promote" and entry.get("to_version") == current:
            return entry.get("from_version")
    last = entries[-1]["to_version"] if entries else None
    return last if last != current else None


def rollback(
    model_name: str = MODEL_NAME,
    user: str | None = None,
    reason: str = "",
    *,
    store: Store | None = None,
) -> PromotionRecord:
    """Put back the champion that the current one replaced (walks the history backwards)."""
    store = store or Store(TrackingSettings())
    current = champion(store, model_name)
    if current is None:
        raise PromotionRefused(f"{model_name} has no champion to roll back")
    came_from = previous_champion(history(model_name, store=store), int(current.version))
    if came_from is None:
        raise PromotionRefused(
            f"no previous champion recorded for {model_name} version {current.version}"
        )
    target = _target(store, model_name, came_from)
    rec = PromotionRecord(
        "rollback",
        int(target.version),
        int(current.version),
        user or getpass.getuser(),
        _now(),
        reason,
        False,
        {k: v for k, v in _metrics(target).items() if k in HEADLINE},
    )
    _move(store, model_name, target, rec)
    return rec


def _metrics_changed(signed: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Metrics the signed record holds that the version's tag no longer says (a forged tag)."""
    changed = [k for k, v in signed.items() if json.dumps(now.get(k)) != json.dumps(v)]
    return [f"metrics tag changed since the signed promotion: {changed}"] if changed else []


def champion_check(
    model_name: str = MODEL_NAME,
    policy: SelectionPolicy | None = None,
    *,
    store: Store | None = None,
) -> str | None:
    """One line on the champion: moved outside granvae (e.g. the MLflow UI)? gates passed?

    None when there is no champion. The alias itself cannot be guarded (anyone with write
    access to the registry can move it), so `granvae models` reports what it finds.
    """
    store = store or Store(TrackingSettings())
    current = champion(store, model_name)
    if current is None:
        return None
    entries = history(model_name, store=store)
    recorded = bool(entries) and entries[-1].get("to_version") == int(current.version)
    gates = _gate_problems(current, policy)
    how = "moved by granvae" if recorded else "MOVED OUTSIDE granvae (no promotion recorded)"
    # --- signed records (record_signing.py): a forged entry or metrics tag is named ---
    if recorded and record_signer(entries[-1], model_name, trusted_keys()) is None:
        how = "MOVED OUTSIDE granvae (its promotion record is not signed by a trusted key)"
    elif recorded:
        gates += _metrics_changed(entries[-1].get("metrics") or {}, _metrics(current))
    result = "gates passed" if not gates else "GATES FAILED: " + "; ".join(gates)
    return f"champion version {current.version}: {how}; {result}"
