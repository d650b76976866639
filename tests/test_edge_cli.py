"""Edge CLI for real: verify, score (streamed JSON lines, heatmaps) and threshold calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from edge_fixtures import make_bundle, noisy_gray, png_bytes, run_cli, sha256_file
from granvae_edge import Inspector
from granvae_edge.calibrate import order_statistic_threshold
from granvae_edge.cli import main
from PIL import Image


def _write_images(folder, spreads, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, spread in enumerate(spreads):
        path = folder / f"img{i:03d}.png"
        path.write_bytes(png_bytes(noisy_gray(rng, spread)))
        paths.append(path)
    return paths


def test_verify_cli_accepts_good_and_refuses_tampered(tmp_path):
    good = make_bundle(tmp_path / "good")
    ok = run_cli("verify", str(good))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK") and "smoke score" in ok.stdout

    bad = make_bundle(tmp_path / "bad")
    (bad / "model.onnx").write_bytes((bad / "model.onnx").read_bytes() + b"x")
    refused = run_cli("verify", str(bad))
    assert refused.returncode == 1
    assert "FAIL" in refused.stderr and "model.onnx" in refused.stderr


def test_score_streams_json_lines_and_keeps_going_after_a_corrupt_file(tmp_path):
    bundle = make_bundle(tmp_path / "b", threshold=1.0)
    paths = _write_images(tmp_path / "imgs", [5, 120, 5])
    corrupt = tmp_path / "imgs" / "img001.png"
    corrupt.write_bytes(corrupt.read_bytes()[:80])  # truncated mid-stream
    missing = tmp_path / "nope.png"
    heat = tmp_path / "heat"
    result = run_cli(
        "score", str(paths[0]), str(corrupt), str(paths[2]), str(missing),
        "--bundle", str(bundle), "--heatmaps", str(heat),
    )  # fmt: skip
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1  # some items failed, but every item got a line
    assert [line["path"] for line in lines] == [
        str(p) for p in (paths[0], corrupt, paths[2], missing)
    ]
    assert "truncated" in lines[1]["error"] and "cannot read" in lines[3]["error"]
    for line in (lines[0], lines[2]):
        assert set(line) >= {"verdict", "score", "decision", "threshold", "latency_ms"}
        assert "top_group" not in line  # the fixture bundle's attribution is not significant
        assert line["threshold"] == 1.0 and line["decision"] is False
        png = Image.open(line["heatmap"])
        assert png.format == "PNG" and png.mode == "RGB" and png.size == (32, 32)
    assert sorted(p.name for p in heat.iterdir()) == ["img000.heatmap.png", "img002.heatmap.png"]


def test_heatmap_overlay_is_red_where_the_map_is_high(tmp_path, capsys):
    """Heatmaps share one fixed scale (1.0 = threshold): the same spot is red on a reject and
    faint on a pass, instead of every image being stretched to its own range."""
    img = np.full((32, 32), 128, dtype=np.uint8)
    img[:8, :8] = 255  # score 1.56 on the fixture model
    (tmp_path / "defect.png").write_bytes(png_bytes(img))
    reds = {}
    for threshold in (1.0, 5.0):
        bundle = make_bundle(tmp_path / f"b{threshold}", threshold=threshold)
        assert main(["score", str(tmp_path / "defect.png"), "--bundle", str(bundle),
                     "--heatmaps", str(tmp_path / f"h{threshold}")]) == 0  # fmt: skip
        line = json.loads(capsys.readouterr().out)
        rgb = np.asarray(Image.open(line["heatmap"]), dtype=int)
        reds[line["verdict"]] = rgb[2, 2, 0] - rgb[2, 2, 1]
        assert abs(rgb[20, 20, 0] - rgb[20, 20, 1]) <= 1  # calm area stays grey
    assert reds["reject"] > 100  # hot corner of a reject is red
    assert reds["pass"] < 40  # the same corner under a higher threshold is faint


def test_order_statistic_threshold_and_small_sample_fallback():
    scores = np.arange(1, 101, dtype=float)  # 1..100
    choice = order_statistic_threshold(scores, 0.05)  # k = ceil(0.95 * 101) = 96
    assert choice.k == 96 and choice.value == 96.0 and choice.note is None
    assert order_statistic_threshold(scores, 0.01).k == 100  # ceil(99.99): the max, guaranteed
    assert order_statistic_threshold(scores, 0.29).k == 72  # ceil(0.71 * 101 = 71.71)
    small = order_statistic_threshold(scores[:20], 0.01)
    assert small.value == 20.0 and "maximum" in small.note and "max" in small.method


def test_calibrate_writes_new_revision_and_decisions_change(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b", threshold=0.05)
    good = _write_images(tmp_path / "good", np.linspace(5, 60, 120), seed=1)
    sha_before = sha256_file(bundle / "model.onnx")
    probe = good[60]  # a typical good image, flagged by the far too strict initial threshold
    assert Inspector(bundle, intra_op_threads=1).score_one(probe).decision is True

    code = main(["calibrate", "--bundle", str(bundle), "--good-images", str(tmp_path / "good"),
                 "--false-alarm-rate", "0.01", "--threads", "1"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)

    manifest = json.loads((bundle / "manifest.json").read_text())
    old = json.loads((bundle / "manifest.r1.json").read_text())
    assert manifest["revision"] == 2 and old["revision"] == 1 and out["revision"] == 2
    assert sha256_file(bundle / "model.onnx") == sha_before == manifest["model_sha256"]
    t = manifest["threshold"]
    assert t["previous_value"] == 0.05 and t["n_images"] == 120 and t["false_alarm_rate"] == 0.01
    assert t["date"] and "order_statistic" in t["method"]
    assert manifest["previous_revisions"][-1]["threshold"]["value"] == 0.05

    inspector = Inspector(bundle, intra_op_threads=1)  # same model.onnx, new manifest
    flags = [v.decision for v in inspector.score_batch([inspector.prepare(p) for p in good])]
    assert np.mean(flags) <= 0.01  # observed false-alarm rate on calibration images <= target
    assert "observed_false_alarm_rate" not in t  # it read like the line's rate; it is not
    assert t["expected_false_alarm_rate"] <= 0.01 and "<= 0.01" in t["guarantee"]
    assert 0.01 < t["false_alarm_rate_upper_95"] < 0.05 and t["rank"] == 120
    assert inspector.threshold == pytest.approx(t["value"])
    assert inspector.score_one(probe).decision is False  # new threshold, same model bytes
    assert run_cli("verify", str(bundle)).returncode == 0

    main(["calibrate", "--bundle", str(bundle), "--good-images", str(tmp_path / "good"),
          "--false-alarm-rate", "0.2", "--threads", "1"])  # fmt: skip
    third = json.loads((bundle / "manifest.json").read_text())
    assert third["revision"] == 3 and (bundle / "manifest.r2.json").exists()
    assert [r["revision"] for r in third["previous_revisions"]] == [1, 2]
    assert third["threshold"]["value"] < t["value"]

    # Roll back as the README says: keep the live one, copy revision 1 over it.
    (bundle / "manifest.r3.json").write_text((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text((bundle / "manifest.r1.json").read_text())
    main(["calibrate", "--bundle", str(bundle), "--good-images", str(tmp_path / "good")])
    assert json.loads((bundle / "manifest.json").read_text())["revision"] == 4  # no reuse of 2, 3
    assert json.loads((bundle / "manifest.r3.json").read_text()) == third


def test_calibrate_with_too_few_images_uses_the_max_and_says_so(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b")
    _write_images(tmp_path / "good", [5, 10, 20])
    assert main(["calibrate", "--bundle", str(bundle), "--good-images", str(tmp_path / "good"),
                 "--threads", "1"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    threshold = json.loads(captured.out)["threshold"]
    assert "n + 1 < 1/far" in threshold["method"] and "note" in threshold
    assert threshold["guarantee"].startswith("NOT guaranteed")
    assert "maximum" in captured.err
