"""The line monitor's statistics: exact CUSUM run lengths checked by simulation, the window
tests, the per-group shift, and one monitor pass over a shipped landing zone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from granvae.monitor import alarm_rate, group_shift, stream_tests
from granvae.monitor.records import read_feedback, read_stream
from granvae.monitor.report import MonitorConfig, run_monitor


@pytest.mark.parametrize("h", [40, 80])
def test_exact_run_lengths_match_simulation(h):
    up = alarm_rate.llr_step(0.01, 0.05)
    arl0, arl1 = alarm_rate.run_length(0.01, up, h), alarm_rate.run_length(0.05, up, h)
    d = alarm_rate.CusumDesign(0.01, 0.05, up, h, arl0, arl1)
    rng = np.random.default_rng(h)
    parts = 2000 * 500
    fired = alarm_rate.simulate_triggers(d, 0.01, 500, 2000, rng)
    # renewal theory: firings ~ parts / ARL0; allow 5 Poisson SDs (a wrong chain is far off)
    expected = parts / arl0
    assert abs(fired - expected) < 5 * np.sqrt(expected) + 0.05 * expected
    delays = alarm_rate.simulate_delays(d, 0.05, 4000, rng)
    assert abs(delays.mean() - arl1) < 4 * delays.std() / np.sqrt(delays.size)


def test_default_design_meets_the_line_targets():
    d = alarm_rate.design(0.01, 0.05, min_arl0=1e5)
    assert d.arl0 >= 1e5 and d.false_triggers_per_100k < 1.0
    assert d.arl1 <= 200  # a drift to 5% false alarms is caught within 200 parts on average
    smaller = alarm_rate.run_length(0.01, d.up, d.h - 1)
    assert smaller < 1e5  # h is the smallest that keeps the guarantee
    rng = np.random.default_rng(0)
    fired = alarm_rate.simulate_triggers(d, 0.01, 3000, 1000, rng)  # 3 million good parts
    assert fired <= 3e6 / d.arl0 + 5 * np.sqrt(3e6 / d.arl0)  # ~29 expected


def test_run_fires_where_the_statistic_crosses():
    d = alarm_rate.design(0.01, 0.05, min_arl0=1e3)
    x = np.zeros(300, bool)
    x[100:] = np.random.default_rng(1).random(200) < 0.5
    path = alarm_rate.run(x, d, restart=False)
    assert path.fired_at and path.fired_at[0] >= 100
    first = path.fired_at[0]
    assert path.statistic[first] >= d.h and path.statistic[:first].max() < d.h
    with pytest.raises(ValueError, match="p0 < p1"):
        alarm_rate.design(0.05, 0.01)


def _latents(rng, factors: np.ndarray) -> np.ndarray:
    """Group 0 (dims 0,1) encodes factor 1, group 1 (dims 2,3) factor 0, group 2 noise."""
    n = len(factors)
    z = rng.normal(0, 0.3, (n, 6))
    z[:, 0] += factors[:, 1]
    z[:, 1] -= 0.5 * factors[:, 1]
    z[:, 2] += factors[:, 0]
    return z


def test_group_shift_names_the_group_aligned_with_the_moved_factor():
    rng = np.random.default_rng(0)
    groups = [[0, 1], [2, 3], [4, 5]]
    f_train = rng.integers(0, 4, (2000, 2)).astype(float)
    train = _latents(rng, f_train)
    align = group_shift.alignment(train, f_train, groups)
    assert align[0].argmax() == 1 and align[1].argmax() == 0 and align[2].max() < 0.05
    f_recent = rng.integers(0, 4, (300, 2)).astype(float)
    f_recent[:, 1] = np.minimum(f_recent[:, 1] + 1, 3)  # factor 1 drifts up
    shifts = group_shift.group_shifts(train, _latents(rng, f_recent), groups)
    assert group_shift.moved_group(shifts).group == 0
    undrifted = group_shift.group_shifts(train, _latents(rng, f_train[:300]), groups)
    assert min(s.p_value for s in undrifted) > 1e-3


def test_window_tests_fire_on_a_shift_only():
    rng = np.random.default_rng(0)
    ref = rng.normal(1.0, 0.2, 2000)
    same = stream_tests.score_shift(rng.normal(1.0, 0.2, 400), ref, threshold=10.0)
    moved = stream_tests.score_shift(rng.normal(1.1, 0.2, 400), ref, threshold=10.0)
    assert not same.fired and moved.fired
    assert not stream_tests.invalid_rate(3, 500, 0.005).fired
    assert stream_tests.invalid_rate(15, 500, 0.005).fired
    assert stream_tests.confirmed_false_alarm_rate(15, 500, 0.01).fired
    assert not stream_tests.confirmed_false_alarm_rate(5, 500, 0.01).fired
    with pytest.raises(ValueError, match="no inspections"):
        stream_tests.invalid_rate(0, 0, 0.01)


def _landing(tmp_path, n: int, drift_at: int, rng) -> None:
    """A landing zone as granvae-edge ship lays it out, with the reject rate going 1% -> 5%."""
    rows = []
    for i in range(n):
        p = 0.01 if i < drift_at else 0.05
        reject = rng.random() < p
        lat = rng.normal(0, 1, 4) + (np.array([0, 0, 1.0, 1.0]) if i >= drift_at else 0)
        rows.append({"id": f"a-{i:09d}", "t": f"2026-01-01T00:00:{i:09d}", "verdict":
                     "reject" if reject else "pass", "score": float(rng.uniform(0, 1) + reject),
                     "threshold": 1.0, "latent_mean": lat.round(4).tolist(),
                     "model_sha256": "m1", "captured": reject})  # fmt: skip
    (tmp_path / "stream").mkdir()
    for k in range(0, n, 1000):
        (tmp_path / "stream" / f"seg-{k:06d}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows[k : k + 1000]))  # fmt: skip
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "a-000002000.json").write_text(
        json.dumps({"feedback": [{"verdict": "false_alarm"}]}))  # fmt: skip


def test_monitor_pass_over_a_landing_zone(tmp_path):
    rng = np.random.default_rng(3)
    _landing(tmp_path, 3000, drift_at=2000, rng=rng)
    stream = read_stream(tmp_path)
    assert len(stream) == 3000 and stream.latent_means.shape == (3000, 4)
    cfg = MonitorConfig(baseline=1000, window=1000)
    quiet = run_monitor(stream.window(0, 2000), [[0, 1], [2, 3]], cfg)
    assert not quiet.fired, quiet.reasons
    report = run_monitor(stream, [[0, 1], [2, 3]], cfg, feedback=read_feedback(tmp_path),
                         alignment=np.array([[0.9, 0.1], [0.05, 0.8]]),
                         factor_names=["orientation", "brightness"])  # fmt: skip
    assert report.fired and report.cusum["fired"]
    assert 0 < report.cusum["fired_after_parts"] - 1000 <= 700
    assert report.moved["group"] == 1 and "brightness" in report.moved["name"]
    assert json.dumps(report.to_json())
