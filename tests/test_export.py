"""ONNX export, parity gate, int8 and the edge bundle, with real onnxruntime sessions."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from granvae.export import (
    MANIFEST_FILE,
    MODEL_FILE,
    OUTPUT_NAMES,
    ExportError,
    compare_quantized,
    export_candidate,
    export_onnx,
    int8_acceptable,
    make_session,
    onnx_opset,
    parity_check,
    quantize_int8,
    read_metadata,
    run_session,
    sha256_file,
    write_bundle,
)
from granvae.export.parity import torch_outputs
from granvae.metrics.thresholds import Threshold, calibrate_threshold
from granvae.models import FactorizedVAE, ModelConfig
from granvae.objectives import ObjectiveConfig, make_groups
from granvae.scoring import InspectionHead
from granvae.train import TrainConfig, train

CLASS_NAMES = ["good", "spot"]


def _head(arch: str, likelihood: str, size: int = 16, channels: int = 1, latent: int = 5):
    torch.manual_seed(0)
    model = FactorizedVAE(
        ModelConfig(
            arch=arch,
            image_size=size,
            in_channels=channels,
            latent_dim=latent,
            hidden=32,
            likelihood=likelihood,
        )
    )
    return InspectionHead(model, make_groups(latent, 2)).eval()


def _images(n: int, size: int = 16, channels: int = 1, seed: int = 0) -> np.ndarray:
    """uint8 NHWC: smooth gradients plus noise, so scores spread out."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, size)[None, :, None, None] * rng.uniform(0.2, 1, (n, 1, 1, 1))
    noise = rng.normal(0, 20, (n, size, size, channels))
    return np.clip(ramp.transpose(0, 2, 1, 3) + noise + 30, 0, 255).astype(np.uint8)


def _squares(n: int, size: int, rng: np.random.Generator, spot: bool = False) -> np.ndarray:
    """NCHW good images (one bright square) and, with spot=True, an extra bright dot."""
    out = np.full((n, 1, size, size), 20, np.uint8)
    for img, (x, y) in zip(out, rng.integers(0, size - 6, (n, 2)), strict=True):
        img[0, y : y + 6, x : x + 6] = 230
        if spot:
            sx, sy = rng.integers(0, size - 3, 2)
            img[0, sy : sy + 3, sx : sx + 3] = 255 - img[0, sy : sy + 3, sx : sx + 3] // 2
    return out


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory):
    head = _head("conv", "bernoulli", size=32, latent=6)
    path = export_onnx(head, tmp_path_factory.mktemp("conv") / "m.onnx", metadata={"beta": 4.0})
    return head, path


@pytest.mark.parametrize(
    ("arch", "likelihood", "channels"),
    [
        ("conv", "bernoulli", 1),
        ("conv", "gaussian", 3),
        ("mlp", "bernoulli", 1),
        ("mlp", "gaussian", 1),
    ],
)
def test_round_trip_parity_dynamic_batch(arch, likelihood, channels, tmp_path) -> None:
    size = 32 if arch == "conv" else 16
    head = _head(arch, likelihood, size=size, channels=channels)
    path = export_onnx(head, tmp_path / "m.onnx")
    session = make_session(path)
    for n in (1, 7):
        images = _images(n, size, channels, seed=n)
        ref = torch_outputs(head, images)
        got = run_session(session, images)
        scale = max(1.0, float(np.median(np.abs(ref["score"]))))
        assert got["score"].shape == (n,) and got["anomaly_map"].shape == (n, size, size)
        assert got["latent_mean"].shape == (n, 5) and got["group_attribution"].shape == (n, 3)
        assert np.abs(got["score"] - ref["score"]).max() <= 1e-4 * scale
        for name in ("anomaly_map", "latent_mean", "group_attribution"):
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4)
        ordered = np.sort(ref["score"])  # thresholds between scores: every split point
        for threshold in [ordered[0] - 1.0, *((ordered[1:] + ordered[:-1]) / 2)]:
            assert np.array_equal(ref["score"] > threshold, got["score"] > threshold)
    result = parity_check(head, path, _images(7, size, channels), threshold=0.0)
    assert result.passed and result.n_images == 7


def test_graph_contract_checker_opset_and_metadata(conv_onnx) -> None:
    _, path = conv_onnx
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert onnx_opset(path) >= 17
    (inp,) = model.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", 32, 32, 1]
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    meta = read_metadata(path)
    assert meta["granvae.exporter"] == "torchscript" and json.loads(meta["granvae.beta"]) == 4.0


def test_parity_gate_rule_and_boundary_flip(conv_onnx) -> None:
    head, path = conv_onnx
    images = _images(20, 32)
    scores = torch_outputs(head, images)["score"]
    # threshold exactly on a torch score (what calibration on these images yields):
    result = parity_check(head, path, images, threshold=float(np.sort(scores)[10]))
    assert result.passed and result.n_decision_flips == result.n_boundary_flips
    assert result.tolerance == pytest.approx(1e-4 * max(1.0, np.median(np.abs(scores))))


def test_parity_gate_fails_loudly_on_corrupted_weights(conv_onnx, tmp_path) -> None:
    head, path = conv_onnx
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name == "model.decoder.11.weight")
    weights = numpy_helper.to_array(init).copy()
    weights += np.random.default_rng(0).normal(0, 0.05, weights.shape).astype(weights.dtype)
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    result = parity_check(head, bad, _images(16, 32), threshold=1e9)
    assert not result.passed and result.max_abs_diff_score > result.tolerance
    from granvae.export.candidate import gate_parity

    with pytest.raises(ExportError, match=r"max\|d score\|=.* vs tolerance"):
        gate_parity(head, bad, _images(16, 32), 1e9, 1e-4)


def _bundle_kwargs(threshold: Threshold) -> dict:
    return dict(
        groups=make_groups(6, 2),
        threshold=threshold,
        class_names=CLASS_NAMES,
        candidate={"objective": "beta_stcvae", "granularity": 2, "beta": 4.0, "latent_dim": 6},
        data_version="abc123:def456",
        mlflow_model_uri="models:/granvae-inspector/3",
        metrics={"auroc": 0.9, "pixel_auroc": float("nan")},
        calibrated_on="val of test data",
    )


def test_bundle_manifest_matches_contract(conv_onnx, tmp_path) -> None:
    _, path = conv_onnx
    thr = Threshold(value=123.4, false_alarm_rate=0.01, n_images=200)
    manifest = write_bundle(tmp_path / "bundle", path, **_bundle_kwargs(thr))
    on_disk = json.loads((tmp_path / "bundle" / MANIFEST_FILE).read_text())
    assert on_disk == manifest
    names = sorted(p.name for p in (tmp_path / "bundle").iterdir())
    assert names == [MANIFEST_FILE, "manifest.sig", MODEL_FILE]  # signed: docs/security.md
    assert manifest["files"] == {MODEL_FILE: manifest["model_sha256"]}
    assert manifest["model_sha256"] == sha256_file(tmp_path / "bundle" / MODEL_FILE)
    assert manifest["schema_version"] == 1 and manifest["opset"] == 17
    assert manifest["input"] == {
        "name": "image", "layout": "NHWC", "dtype": "uint8", "height": 32, "width": 32,
        "channels": 1, "color_mode": "L", "resize": "none",
    }  # fmt: skip  (no frame contract given: the model never saw a resized frame)
    assert manifest["outputs"] == list(OUTPUT_NAMES)
    assert manifest["groups"] == [[0, 1], [2, 3], [4, 5]]
    block = manifest["threshold"]
    assert block["value"] == 123.4 and block["score"] == "neg_elbo" and block["n_images"] == 200
    assert block["calibrated_on"] == "val of test data" and block["false_alarm_rate"] == 0.01
    # what the threshold promises the line: conformal rank ceil(0.99 * 201) = 199 of 200
    assert block["rank"] == 199 and block["expected_false_alarm_rate"] == pytest.approx(2 / 201)
    assert "<= 0.01" in block["guarantee"] and 0.01 < block["false_alarm_rate_upper_95"] < 0.05
    assert manifest["metrics"] == {"auroc": 0.9, "pixel_auroc": None}
    assert manifest["revision"] == 1 and manifest["previous_revisions"] == []
    assert manifest["mlflow_model_uri"] == "models:/granvae-inspector/3"
    for key in ("class_names", "candidate", "data_version", "created"):
        assert manifest[key]
    with pytest.raises(FileExistsError):
        write_bundle(tmp_path / "bundle", path, **_bundle_kwargs(thr))


def test_bundle_is_atomic_on_failure(conv_onnx, tmp_path) -> None:
    _, path = conv_onnx
    kwargs = _bundle_kwargs(Threshold(value=1.0, false_alarm_rate=0.01, n_images=10))
    kwargs["metrics"] = {"auroc": object()}  # fails at JSON time, after model.onnx was copied
    with pytest.raises(TypeError):
        write_bundle(tmp_path / "bundle", path, **kwargs)
    assert list(tmp_path.iterdir()) == []
    good = write_bundle(tmp_path / "bundle", path, **_bundle_kwargs(Threshold(1.0, 0.01, 10)))
    with pytest.raises(TypeError):  # a failed overwrite keeps the previous bundle intact
        write_bundle(tmp_path / "bundle", path, overwrite=True, **kwargs)
    assert json.loads((tmp_path / "bundle" / MANIFEST_FILE).read_text()) == good
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_int8_quantised_models_run_and_policy(conv_onnx, tmp_path) -> None:
    _, path = conv_onnx
    rng = np.random.default_rng(1)
    calib = _images(32, 32, seed=3)
    images = np.concatenate([_images(12, 32, seed=4), _images(12, 32, seed=5)])
    images[12:, 8:16, 8:16, 0] = 255  # bright square "defects"
    labels = np.r_[np.zeros(12, int), np.ones(12, int)]
    for mode in ("dynamic", "static"):
        q = quantize_int8(path, tmp_path / f"{mode}.onnx", mode=mode, calibration_images=calib)
        out = run_session(make_session(q), images[:5])
        assert all(np.isfinite(out[name]).all() for name in OUTPUT_NAMES)
        comparison = compare_quantized(path, q, images, labels, threshold=float(rng.uniform()))
        for key in ("auroc_fp32", "auroc_int8", "auroc_drop", "max_abs_diff_score"):
            assert math.isfinite(comparison[key])
        assert read_metadata(q)["granvae.precision"] == f"int8-{mode}"
    assert int8_acceptable({"auroc_drop": 0.005}) and not int8_acceptable({"auroc_drop": 0.02})
    assert int8_acceptable({"auroc_drop": 0.02}, max_auroc_drop=0.03)
    assert not int8_acceptable({"auroc_drop": float("nan")})
    with pytest.raises(ValueError, match="calibration_images"):
        quantize_int8(path, tmp_path / "x.onnx", mode="static")


def test_trained_candidate_exports_to_a_verified_bundle(tmp_path) -> None:
    rng = np.random.default_rng(0)
    model_cfg = ModelConfig(arch="mlp", image_size=16, latent_dim=4, hidden=64)
    objective = ObjectiveConfig(name="beta_stcvae", granularity=2, beta=2.0)
    cfg = TrainConfig(epochs=5, batch_size=32, lr=3e-3, seed=0, num_threads=1)
    threads = torch.get_num_threads()  # one thread: tiny batches thrash with more on shared CPUs
    try:
        result = train(
            _squares(256, 16, rng), model_cfg, objective, cfg, tmp_path / "c", progress=False
        )
    finally:
        torch.set_num_threads(threads)
    assert result.status == "finished"
    val = _squares(64, 16, rng)
    head = InspectionHead(FactorizedVAE.load(result.model_dir), make_groups(4, 2))
    val_scores = torch_outputs(head, val.transpose(0, 2, 3, 1).copy())["score"]
    thr = calibrate_threshold(val_scores, 0.05)
    test = np.concatenate([_squares(30, 16, rng), _squares(30, 16, rng, spot=True)])
    labels = np.r_[np.zeros(30, int), np.ones(30, int)]
    out = export_candidate(
        tmp_path / "c", tmp_path / "bundle", val_images=val, threshold=thr,
        class_names=CLASS_NAMES, data_version="v1", metrics={"image_auroc": 0.9},
        candidate={"objective": "beta_stcvae", "granularity": 2, "beta": 2.0, "seed": 0},
        int8=True, int8_mode="dynamic", test_images=test, test_labels=labels,
    )  # fmt: skip
    assert out.parity.passed and out.parity.n_images == 64
    manifest = json.loads(out.manifest_path.read_text())
    assert manifest["groups"] == [[0, 1], [2, 3]] and manifest["candidate"]["latent_dim"] == 4
    assert manifest["model_sha256"] == sha256_file(out.model_path)
    assert out.int8 is not None and "auroc_drop" in out.int8
    assert manifest["candidate"]["precision"] == ("int8" if out.int8["accepted"] else "fp32")
    if out.int8["accepted"]:  # int8 ships with a threshold recalibrated on its own scores
        assert manifest["threshold"]["value"] == pytest.approx(out.int8["threshold_int8"])
    else:
        assert manifest["threshold"]["value"] == pytest.approx(thr.value)
    shipped = run_session(make_session(out.model_path), test.transpose(0, 2, 3, 1).copy())
    assert shipped["score"].shape == (60,)
    meta = read_metadata(out.model_path)
    assert json.loads(meta["granvae.groups"]) == [[0, 1], [2, 3]]
    assert json.loads(meta["granvae.granularity"]) == 2 and meta["granvae.data_version"] == "v1"


def test_dynamo_fallback_exporter_needs_opset_18_and_keeps_parity(tmp_path) -> None:
    """The path ``exporter="auto"`` falls back to once torch drops the TorchScript exporter."""
    head = _head("mlp", "gaussian")
    with pytest.raises(ValueError, match="opset >= 18"):
        export_onnx(head, tmp_path / "x.onnx", opset=17, exporter="dynamo")
    path = export_onnx(head, tmp_path / "d.onnx", opset=18, exporter="dynamo")
    assert onnx_opset(path) == 18 and read_metadata(path)["granvae.exporter"] == "dynamo"
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["image"]
    for n in (1, 7):
        assert parity_check(head, path, _images(n, seed=n), threshold=0.0).passed
