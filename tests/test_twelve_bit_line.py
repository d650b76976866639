"""A mono-12 camera line, end to end: import with --bit-depth 12, train, export, serve.

The frames are 16-bit PNGs holding 12-bit values (0..4095), as such cameras write them. The
import maps the declared window 0..4095 to 0..255 with the lookup table the edge uses, the
exporter writes the window into the bundle's frame contract, and the edge maps served frames
through the same window: the edge's scores and verdicts on the 12-bit files equal training's.
The bundle without its contract (the 8-bit mapping every bundle used before, 0..65535 ->
0..255) turns the same frames nearly black and its scores no longer mean anything: the test
shows that its verdicts leave training's. (On this small model the dark frames are all
rejected, good ones too; on the issue's model they all passed. Either way only the window
gives training's verdicts: 8/8 spots and 0/24 good parts rejected.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from edge_fixtures import DEPLOY  # noqa: F401  (puts deploy/ on sys.path)
from PIL import Image
from typer.testing import CliRunner

from granvae.cli import app
from granvae.config import load_settings
from granvae.data import generate
from granvae.data.to_folder import write_mvtec
from granvae.sweep import run_sweep

SETTINGS = {
    "model": {"arch": "conv", "latent_dim": 4, "hidden": 32},
    "train": {"epochs": 2, "batch_size": 32},
    "sweep": {"granularities": [2], "betas": [2.0], "workers": 1},
    "evaluation": {"iwae_k": 2, "iwae_images": 16, "latency_repeats": 2, "disentanglement": False,
                   "score": "fusion"},
}
CANDIDATE = "g2-b2-d4-s0"


def _add_spots(folder, n: int = 8) -> None:
    """test/spot: good test parts with a bright 10 px spot, a defect a 2-epoch model sees."""
    spot = folder / "test" / "spot"
    spot.mkdir()
    for k, path in enumerate(sorted((folder / "test" / "good").glob("*.png"))[:n]):
        v = np.array(Image.open(path))
        v[10:20, 10:20] = 255
        Image.fromarray(v).save(spot / f"{k:04d}.png")


def _to_twelve_bit(folder) -> None:
    """Rewrite every 8-bit image under train/ and test/ as a mono-12 frame in a 16-bit PNG."""
    for path in [*folder.glob("train/*/*.png"), *folder.glob("test/*/*.png")]:
        v = np.asarray(Image.open(path), dtype=np.uint32)
        Image.fromarray(((v * 4095 + 127) // 255).astype(np.uint16)).save(path)


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    root = tmp_path_factory.mktemp("mono12")
    splits, meta = generate("surfaces", 128, 64, 48, seed=3, image_size=32)
    write_mvtec(root / "landing", splits, meta)
    _add_spots(root / "landing")
    _to_twelve_bit(root / "landing")
    runner = CliRunner()
    result = runner.invoke(app, ["data", "import", str(root / "landing"), "--out",
                                 str(root / "data"), "--bit-depth", "12"])  # fmt: skip
    assert result.exit_code == 0, result.output
    run_sweep(load_settings(None, SETTINGS), root / "data", root / "sweep", progress=False)
    # a tiny model fails the default recall gate; the window's path is under test, not the gates
    result = runner.invoke(app, ["export", str(root / "sweep"), "--out", str(root / "bundle"),
                                 "--candidate", CANDIDATE, "--force"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return root


def _training(root):
    cdir = root / "sweep" / "candidates" / CANDIDATE
    threshold = json.loads((cdir / "threshold.json").read_text())["value"]
    return np.load(cdir / "scores.npz")["test_score"], threshold


def _test_files(root):
    """The test split's files in the store's row order (names are paths under the folder)."""
    from granvae.data import load_dataset

    splits, _ = load_dataset(root / "data")
    return [root / "landing" / name for name in splits["test"].names], splits["test"].labels


def test_the_window_goes_from_import_to_the_bundle(line):
    store = json.loads((line / "data" / "manifest.json").read_text())
    assert store["source"]["bit_depth"] == 12 and store["source"]["window"] == [0, 4095]
    manifest = json.loads((line / "bundle" / "manifest.json").read_text())
    contract = manifest["frame_contract"]
    assert contract["bit_depth"] == 12 and contract["window"] == [0, 4095]
    assert contract["source_sizes"] == [[32, 32]] and manifest["input"]["resize"] == "none"


def test_served_twelve_bit_frames_score_as_in_training_and_defects_are_rejected(line, tmp_path):
    from granvae_edge import Inspector
    from granvae_edge.manifest import write_json_atomic

    scores, threshold = _training(line)
    files, labels = _test_files(line)
    edge = Inspector(line / "bundle", intra_op_threads=1)
    verdicts = [edge.score_one(path) for path in files]
    got = np.array([v.score for v in verdicts])
    tolerance = 1e-4 * max(1.0, float(np.median(np.abs(scores))))
    assert np.max(np.abs(got - scores)) <= tolerance
    rejected = np.array([v.verdict == "reject" for v in verdicts])
    clear = np.abs(scores - threshold) > tolerance
    assert np.array_equal(rejected[clear], (scores > threshold)[clear])
    spots = np.array(["/spot/" in str(p) for p in files])
    assert rejected[spots].all()  # every spot is caught on the line, as in training

    # The same bundle without its contract: the old 0..65535 -> 0..255 mapping.
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.onnx").write_bytes((line / "bundle" / "model.onnx").read_bytes())
    for extra in (line / "bundle").glob("*.npz"):
        (old / extra.name).write_bytes(extra.read_bytes())
    manifest = json.loads((line / "bundle" / "manifest.json").read_text())
    del manifest["frame_contract"]
    write_json_atomic(old / "manifest.json", manifest)
    legacy = Inspector(old, intra_op_threads=1)
    old_scores = np.array([legacy.score_one(path).score for path in files])
    assert np.median(np.abs(old_scores - scores)) > 100 * tolerance  # not training's scores
    old_rejected = old_scores > threshold
    # The 8-bit mapping's verdicts are not training's: it rejects good frames, or misses spots.
    assert not np.array_equal(old_rejected[clear], (scores > threshold)[clear])
    print(f"8-bit mapping: {int(old_rejected[spots].sum())}/{int(spots.sum())} spots rejected, "
          f"{int(old_rejected[labels == 0].sum())}/{int((labels == 0).sum())} good rejected; "
          f"with the window: {int(rejected[spots].sum())}/{int(spots.sum())}, "
          f"{int(rejected[labels == 0].sum())}/{int((labels == 0).sum())}")
