"""The frame contract's two halves agree, and import follows the edge's file policy.

granvae fits the frame statistics and the grey window at export; granvae_edge recomputes them
on every frame. The edge package cannot import granvae, so the formulas live twice: these
tests hold them together, then check what import does with 16-bit frames, FIFOs, links,
transparency and oversized headers (one problem line each, as on the edge).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from edge_fixtures import contract_block, make_bundle, png_bytes, with_contract
from PIL import Image
from typer.testing import CliRunner

from granvae.cli import app
from granvae.data import import_mvtec, load_dataset
from granvae.data.base import DataValidationError
from granvae.data.frames import fit_ranges, frame_contract, frame_stats, window_lut


@pytest.mark.parametrize("shape", [(32, 32), (17, 40), (24, 24, 3), (2, 9)])
def test_frame_statistics_are_the_same_number_on_both_sides(shape):
    from granvae_edge import contract

    frame = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    assert frame_stats(frame) == contract.frame_stats(frame)


def test_statistics_mean_what_their_names_say():
    flat = np.full((16, 16), 200, np.uint8)
    assert frame_stats(flat) == {"mean": 200.0, "contrast": 0.0, "sharpness": 0.0}
    one = np.zeros((5, 5), np.uint8)
    one[2, 2] = 10  # a single spot: Laplacian 40 at the spot, -10 at its 4 interior neighbours
    assert frame_stats(one)["sharpness"] == pytest.approx((40 + 4 * 10) / 9)


def test_window_lookup_table_is_the_edge_one_and_maps_the_window_ends():
    from granvae_edge.preprocess import window_lut as edge_lut

    for lo, hi in [(0, 4095), (0, 65535), (0, 1023)]:
        ours = window_lut(lo, hi)
        assert np.array_equal(ours, edge_lut(lo, hi))
        assert ours[lo] == 0 and ours[hi] == 255 and ours[hi + 1 if hi < 65535 else hi] == 255
    assert window_lut(0, 4095)[2048] == 128  # mid-window -> mid-grey


def test_fitted_ranges_hold_the_good_frames_and_refuse_a_blank_one():
    rng = np.random.default_rng(0)
    frames = [np.clip(128 + rng.normal(0, 20, (32, 32)), 0, 255).astype(np.uint8) for _ in range(8)]
    ranges = fit_ranges(frame_stats(f) for f in frames)
    for f in frames:
        s = frame_stats(f)
        assert all(ranges[k][0] <= s[k] <= ranges[k][1] for k in ranges)
    blank = frame_stats(np.full((32, 32), 128, np.uint8))
    assert not ranges["contrast"][0] <= blank["contrast"]
    assert not ranges["sharpness"][0] <= blank["sharpness"]


def test_contract_from_store_source_block_says_when_the_edge_may_resize():
    images = np.full((3, 1, 32, 32), 100, np.uint8)
    same = frame_contract(None, (32, 32), 1, images)
    assert same["resize"] == "none" and same["source_sizes"] == [[32, 32]]
    source = {"sizes": [[64, 64]], "working_size": [32, 32], "bit_depth": 12,
              "window": [0, 4095], "channels": 1, "resized": True}  # fmt: skip
    shrunk = frame_contract(source, (32, 32), 1, images)
    assert shrunk["resize"] == "bilinear" and shrunk["window"] == [0, 4095]
    with pytest.raises(ValueError, match="working_size"):
        frame_contract(source, (16, 16), 1, images)


def test_bad_contract_blocks_refuse_the_bundle_naming_the_field(tmp_path):
    from granvae_edge import BundleError, Inspector

    bad = contract_block(32)
    bad["window"] = [0, 70000]
    bundle = with_contract(make_bundle(tmp_path / "b"), bad)
    with pytest.raises(BundleError, match="frame_contract.window"):
        Inspector(bundle, intra_op_threads=1)
    other = with_contract(make_bundle(tmp_path / "c"), contract_block(64))
    with pytest.raises(BundleError, match="working_size"):
        Inspector(other, intra_op_threads=1)


def test_old_bundle_without_contract_says_how_it_behaves(tmp_path):
    from granvae_edge import Inspector

    insp = Inspector(make_bundle(tmp_path / "b"), intra_op_threads=1)
    assert "no frame_contract" in insp.contract_status()
    # and it still resizes as before: a 64 px frame is scored, not refused
    assert insp.score_one(png_bytes(np.full((64, 64), 128, np.uint8))).verdict == "pass"


def _tree(root, images: dict[str, bytes]) -> None:
    for rel, data in images.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _png16(values: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def test_twelve_bit_import_maps_the_window_and_records_the_source(tmp_path):
    rng = np.random.default_rng(0)
    frames = {f"train/good/{k}.png": _png16(rng.integers(0, 4096, (32, 32))) for k in range(4)}
    frames["test/good/0.png"] = _png16(np.full((32, 32), 4095))
    frames["test/good/1.png"] = _png16(np.full((32, 32), 2048))
    _tree(tmp_path / "in", frames)
    manifest = import_mvtec(tmp_path / "in", tmp_path / "store", bit_depth=12, val_fraction=0.25)
    assert manifest["source"] == {"sizes": [[32, 32]], "working_size": [32, 32], "bit_depth": 12,
                                  "window": [0, 4095], "channels": 1, "resized": False}  # fmt: skip
    splits, _ = load_dataset(tmp_path / "store")
    assert sorted(np.unique(splits["test"].images).tolist()) == [128, 255]
    with pytest.raises(DataValidationError, match="declare the camera.s --bit-depth"):
        import_mvtec(tmp_path / "in", tmp_path / "store8", bit_depth=8)  # 16-bit undeclared
    _tree(tmp_path / "in", {"test/good/2.png": _png16(np.full((32, 32), 60000))})
    with pytest.raises(DataValidationError, match="outside the declared 12-bit window"):
        import_mvtec(tmp_path / "in", tmp_path / "store2", bit_depth=12)


def test_import_names_fifos_links_transparency_and_bombs_one_line_each(tmp_path):
    rng = np.random.default_rng(1)
    good = {f"train/good/{k}.png": png_bytes(rng.integers(0, 256, (32, 32), dtype=np.uint8))
            for k in range(3)}  # fmt: skip
    good["test/good/0.png"] = png_bytes(rng.integers(0, 256, (32, 32), dtype=np.uint8))
    root = tmp_path / "in"
    _tree(root, good)
    os.mkfifo(root / "train/good/fifo.png")
    (root / "train/good/dangling.png").symlink_to(root / "nope.png")
    (root / "train/good/loop.png").symlink_to(root / "train/good/loop.png")
    opaque = np.dstack([rng.integers(0, 256, (32, 32, 3)), np.full((32, 32), 255)])
    Image.fromarray(opaque.astype(np.uint8), "RGBA").save(root / "test/good/opaque.png")
    see_through = opaque.copy()
    see_through[0, 0, 3] = 0
    Image.fromarray(see_through.astype(np.uint8), "RGBA").save(root / "test/good/alpha.png")
    Image.new("L", (1500, 1000)).save(root / "test/good/bomb.png")
    result = CliRunner().invoke(app, ["data", "import", str(root), "--out",
                                      str(tmp_path / "store"), "--max-pixels", "1000000"])
    assert result.exit_code != 0
    text = result.output
    assert "Traceback" not in text
    for name, why in [("train/good/fifo.png", "not a regular file (a FIFO)"),
                      ("train/good/dangling.png", "dangling symbolic link"),
                      ("train/good/loop.png", "symbolic link loop"),
                      ("test/good/alpha.png", "transparent pixels"),
                      ("test/good/bomb.png", "exceeds the cap of 1000000")]:  # fmt: skip
        assert name in text and why in text, (name, text)
    assert "opaque.png" not in text  # fully opaque alpha is dropped, as on the edge


def test_import_cannot_write_is_one_line(tmp_path):
    rng = np.random.default_rng(2)
    _tree(tmp_path / "in", {f"{s}/good/{k}.png": png_bytes(
        rng.integers(0, 256, (32, 32), dtype=np.uint8)) for s in ("train", "test")
        for k in range(2)})  # fmt: skip
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # the store's parent cannot be created
    result = CliRunner().invoke(app, ["data", "import", str(tmp_path / "in"), "--out",
                                      str(blocker / "store")])  # fmt: skip
    assert result.exit_code != 0 and "cannot write" in result.output
    assert "Traceback" not in result.output


def test_bundle_writes_resize_from_the_contract(tmp_path):
    from granvae.export.bundle import build_manifest

    bundle = make_bundle(tmp_path / "b")
    threshold = {"value": 1.0, "false_alarm_rate": 0.01, "n_images": 10}
    kwargs = dict(groups=[[0], [1], [2], [3]], threshold=threshold,
                  class_names=["good", "defect"], candidate={}, data_version="v")  # fmt: skip
    plain = build_manifest(bundle / "model.onnx", **kwargs)
    assert plain["input"]["resize"] == "none" and "frame_contract" not in plain
    assert plain["attribution"]["significant"] is False
    contract = contract_block(32, [[32, 32], [64, 64]])
    shipped = build_manifest(bundle / "model.onnx", frame_contract=contract, **kwargs)
    assert shipped["input"]["resize"] == "bilinear"
    assert json.loads(json.dumps(shipped))["frame_contract"]["source_sizes"][1] == [64, 64]


def test_report_heatmaps_use_the_edge_scale(tmp_path):
    """granvae's report scales maps as the edge does, so both pictures read the same."""
    from granvae_edge import Inspector

    from granvae.report.pictures import threshold_scaled

    insp = Inspector(make_bundle(tmp_path / "b", threshold=1.0), intra_op_threads=1)
    img = np.full((32, 32), 128, np.uint8)
    img[:8, :8] = 255
    verdict = insp.score_one(png_bytes(img))
    edge = insp.normalised_map(verdict)
    ours = threshold_scaled(verdict.anomaly_map[None], np.array([verdict.score]), 1.0, False)[0]
    assert np.allclose(ours, edge, rtol=1e-5, atol=1e-7)
    assert ours.max() == pytest.approx(verdict.score)  # threshold 1.0: peak = score
