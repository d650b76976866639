"""One monitor pass over a line's stream: every test, and an alert that says why.

The first ``baseline`` inspections of the current model are its reference (the parts seen
right after deployment: pass scores, latent means, invalid rate); everything after is tested.
The alarm-rate CUSUM runs over the tested parts; the other tests look at the last ``window``
of them. The alert names the latent group that moved most, and with an alignment table
(group x factor correlation ratio on training data, group_shift.alignment) the factor it stands for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from granvae.monitor import alarm_rate, group_shift, stream_tests
from granvae.monitor.records import Stream


@dataclass(frozen=True)
class MonitorConfig:
    false_alarm_rate: float = 0.01  # p0: the rate the threshold was calibrated to
    drifted_rate: float = 0.05  # p1: the rate the CUSUM is tuned to catch
    min_arl0: float = 1e5  # parts between false triggers (1 per 100,000)
    baseline: int = 1000
    window: int = 500
    invalid_rate: float = 0.005  # expected share of invalid frames
    level: float = 1e-3  # p-value below which a window test fires


@dataclass
class MonitorReport:
    n_baseline: int
    n_tested: int
    cusum: dict
    tests: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    moved: dict | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def fired(self) -> bool:
        return bool(self.reasons)

    def to_json(self) -> dict:
        return {"fired": self.fired, **self.__dict__}


def _latent_passes(stream: Stream) -> np.ndarray | None:
    if stream.latent_means is None:
        return None
    rows = stream.latent_means[stream.verdicts == "pass"]
    rows = rows[np.isfinite(rows).all(axis=1)]
    return rows if len(rows) >= 2 else None


def _name(k: int, alignment: np.ndarray | None, factor_names: list[str] | None) -> str:
    if alignment is None or factor_names is None:
        return f"group {k}"
    j = int(np.argmax(alignment[k]))
    return f"group {k} ({factor_names[j]}, alignment {alignment[k, j]:.2f})"


def run_monitor(
    stream: Stream, groups: list[list[int]] | None, cfg: MonitorConfig,
    feedback: dict[str, list[dict]] | None = None, alignment: np.ndarray | None = None,
    factor_names: list[str] | None = None,
) -> MonitorReport:  # fmt: skip
    """All tests on one stream; ValueError if it is shorter than the baseline plus 2."""
    if len(stream) < cfg.baseline + 2:
        raise ValueError(f"{len(stream)} inspections: need more than the baseline {cfg.baseline}")
    base, tested = stream.window(0, cfg.baseline), stream.window(cfg.baseline)
    recent = tested.window(max(0, len(tested) - cfg.window))
    design = alarm_rate.design(cfg.false_alarm_rate, cfg.drifted_rate, cfg.min_arl0)
    judged = tested.verdicts != "invalid"
    path = alarm_rate.run(tested.verdicts[judged] == "reject", design, restart=False)
    first = path.fired_at[0] if path.fired_at else None
    ids = [i for i, ok in zip(tested.ids, judged, strict=True) if ok]
    report = MonitorReport(cfg.baseline, len(tested), {
        **design.to_json(), "fired": first is not None, "fired_after_parts": None if first is None
        else first + 1, "fired_at_item": None if first is None else ids[first]})  # fmt: skip
    if first is not None:
        report.reasons.append(f"alarm rate: CUSUM fired after {first + 1} parts "
                              f"(tuned for {cfg.false_alarm_rate:g} -> {cfg.drifted_rate:g})")
    _window_tests(report, base, recent, cfg, feedback or {})
    lat_base, lat_recent = _latent_passes(base), _latent_passes(recent)
    if groups and lat_base is not None and lat_recent is not None:
        shifts = group_shift.group_shifts(lat_base, lat_recent, groups)
        report.groups = [s.to_json() for s in shifts]
        moved = group_shift.moved_group(shifts)
        report.moved = {**moved.to_json(), "name": _name(moved.group, alignment, factor_names)}
        if report.reasons or moved.p_value < cfg.level:
            report.reasons.append(f"latent shift: {report.moved['name']} moved most "
                                  f"(p {moved.p_value:.2g}, {moved.mean_shift_sd:.2f} SD)")
    return report


def _window_tests(report: MonitorReport, base: Stream, recent: Stream, cfg: MonitorConfig,
                  feedback: dict[str, list[dict]]) -> None:  # fmt: skip
    results = []
    passes_recent = recent.scores[recent.verdicts == "pass"]
    passes_base = base.scores[base.verdicts == "pass"]
    threshold = float(np.nanmax(np.concatenate([passes_base, passes_recent])))
    if passes_recent.size >= 2 and passes_base.size >= 2:
        results.append(stream_tests.score_shift(passes_recent, passes_base, threshold, cfg.level))
    n_invalid = int((recent.verdicts == "invalid").sum())
    results.append(stream_tests.invalid_rate(n_invalid, len(recent), cfg.invalid_rate, cfg.level))
    n_fa = sum(any(v.get("verdict") == "false_alarm" for v in feedback.get(i, []))
               for i in recent.ids)  # fmt: skip
    results.append(stream_tests.confirmed_false_alarm_rate(
        n_fa, len(recent), cfg.false_alarm_rate, cfg.level))  # fmt: skip
    report.tests = [r.to_json() for r in results]
    report.reasons += [f"{r.name}: p {r.p_value:.2g} (statistic {r.statistic:.3g})"
                       for r in results if r.fired]  # fmt: skip
