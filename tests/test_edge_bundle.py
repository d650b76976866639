"""Edge runtime: bundle verification, pre-processing and scoring with a real onnxruntime session."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from edge_fixtures import expected_score, make_bundle, noisy_gray, png_bytes
from granvae_edge import BundleError, InputError, Inspector, load_bundle
from granvae_edge import preprocess as pp
from PIL import Image


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("edge") / "bundle", threshold=1.0)


@pytest.fixture(scope="module")
def inspector(bundle):
    return Inspector(bundle, intra_op_threads=1)


def _edit_manifest(path, edit):
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_verified_bundle_loads_with_tuned_session(bundle):
    loaded = load_bundle(bundle, intra_op_threads=1)
    assert loaded.revision == 1
    assert loaded.threshold == 1.0
    assert loaded.session.get_inputs()[0].name == "image"


def test_tampered_model_is_refused_naming_the_file(tmp_path):
    b = make_bundle(tmp_path / "b")
    with open(b / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"sha256 mismatch for .*model\.onnx"):
        load_bundle(b)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.pop("threshold"), "'threshold'"),
        (lambda m: m["input"].pop("height"), "'input.height'"),
        (lambda m: m["threshold"].pop("value"), "'threshold.value'"),
        (lambda m: m.update(revision="2"), "'revision' must be int"),
        (lambda m: m["input"].update(channels=3), "'input.channels'"),
        (lambda m: m.update(outputs=["score"]), "'outputs'"),
    ],
)
def test_bad_manifest_is_refused_naming_the_field(tmp_path, edit, field):
    b = make_bundle(tmp_path / "b")
    _edit_manifest(b, edit)
    with pytest.raises(BundleError, match=field):
        load_bundle(b)


def test_manifest_that_disagrees_with_the_graph_is_refused(tmp_path):
    b = make_bundle(tmp_path / "b")
    _edit_manifest(b, lambda m: m["input"].update(height=64))
    with pytest.raises(BundleError, match="height is 32, manifest says 64"):
        load_bundle(b)


def test_scores_match_the_graph_and_threshold_comes_from_manifest(inspector):
    rng = np.random.default_rng(0)
    calm, wild = noisy_gray(rng, 10), noisy_gray(rng, 120)
    verdicts = inspector.score_batch([calm, wild])
    assert verdicts[0].score == pytest.approx(expected_score(calm), rel=1e-4)
    assert verdicts[1].score == pytest.approx(expected_score(wild), rel=1e-4)
    assert [v.decision for v in verdicts] == [False, True]
    assert all(v.threshold == 1.0 for v in verdicts)
    assert verdicts[1].anomaly_map.shape == (32, 32)
    assert 0 <= verdicts[1].top_group < 4 and 0 < verdicts[1].top_group_share <= 1


def test_top_group_points_at_the_anomalous_quadrant(inspector):
    img = np.full((32, 32), 128, dtype=np.uint8)
    img[20:, 20:] = 255  # bottom-right quadrant = group 3 in the fixture model
    verdict = inspector.score_one(png_bytes(img))
    assert verdict.top_group == 3
    assert verdict.top_group_share > 0.9


def test_bilinear_resize_and_rgb_to_gray(inspector):
    rgb = np.full((64, 48, 3), 128, dtype=np.uint8)
    arr = inspector.prepare(png_bytes(rgb))
    assert arr.shape == (32, 32, 1) and arr.dtype == np.uint8
    assert int(arr[0, 0, 0]) == 128


def _encoded(mode: str, size=(32, 32), fmt="PNG", color=0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty input"),
        (b"definitely not an image", "not a decodable image"),
        (png_bytes(np.full((32, 32), 7, np.uint8))[:60], "truncated"),
        (_encoded("LA", color=(100, 10)), "transparent"),
        (_encoded("CMYK", fmt="JPEG", color=(0, 0, 0, 0)), "cannot be converted sensibly"),
    ],
)
def test_bad_inputs_raise_input_error(inspector, data, message):
    with pytest.raises(InputError, match=message):
        inspector.prepare(data)


def test_opaque_alpha_and_sixteen_bit_are_converted(inspector):
    assert inspector.prepare(_encoded("LA", color=(100, 255)))[0, 0, 0] == 100
    sixteen = Image.fromarray(np.full((32, 32), 65535, dtype=np.uint16))
    buf = io.BytesIO()
    sixteen.save(buf, format="PNG")
    assert inspector.prepare(buf.getvalue())[0, 0, 0] == 255


def test_decompression_bomb_guard_refuses_before_decoding():
    big = _encoded("L", size=(3000, 3000))
    spec = {"height": 32, "width": 32, "channels": 1, "color_mode": "L", "resize": "bilinear"}
    with pytest.raises(InputError, match="too large"):
        pp.from_bytes(big, {**spec, "dtype": "uint8"}, max_pixels=1_000_000)


def test_wrong_size_without_resize_is_refused(tmp_path):
    insp = Inspector(make_bundle(tmp_path / "b", resize="none"), intra_op_threads=1)
    with pytest.raises(InputError, match="does not resize"):
        insp.prepare(png_bytes(np.zeros((40, 32), np.uint8)))
    assert insp.score_one(png_bytes(np.zeros((32, 32), np.uint8))).score > 0


def test_rgb_bundle_accepts_gray_by_replication(tmp_path):
    insp = Inspector(make_bundle(tmp_path / "b", channels=3), intra_op_threads=1)
    arr = insp.prepare(png_bytes(np.full((32, 32), 200, np.uint8)))
    assert arr.shape == (32, 32, 3) and set(np.unique(arr)) == {200}
    with pytest.raises(InputError, match="shape"):
        insp.score_batch([np.zeros((32, 32, 2), np.uint8)])


def test_float32_bundle_scores_like_uint8(tmp_path, inspector):
    insp = Inspector(
        make_bundle(tmp_path / "b", dtype="float32", threshold=1.0), intra_op_threads=1
    )
    img = noisy_gray(np.random.default_rng(3), 50)
    assert insp.prepare(png_bytes(img)).dtype == np.float32
    assert insp.score_one(img).score == pytest.approx(inspector.score_one(img).score, rel=1e-5)
