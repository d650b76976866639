"""verify / score / serve against non-finite thresholds, odd folders, failing heatmaps, pipes.

Every input gets a result line or an error line; a bundle whose numbers are not finite is
refused by every command; a closed pipe ends `score` quietly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from edge_fixtures import edge_env, free_port, make_bundle, noisy_gray, png_bytes, run_cli
from granvae_edge import BundleError, Inspector
from inputs import animated_gif, encode, multipage_tiff, tiff_32bit
from PIL import Image


def _set_threshold(bundle, token: str) -> None:
    text = (bundle / "manifest.json").read_text()
    manifest = json.loads(text)
    old = json.dumps(manifest["threshold"]["value"])
    (bundle / "manifest.json").write_text(text.replace(f'"value": {old}', f'"value": {token}', 1))


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_threshold_is_refused_everywhere(tmp_path, token):
    bundle = make_bundle(tmp_path / "b")
    _set_threshold(bundle, token)
    assert token in (bundle / "manifest.json").read_text()
    needle = "'threshold.value' is not a finite number"
    with pytest.raises(BundleError, match=needle):
        Inspector(bundle)
    verify = run_cli("verify", str(bundle))
    assert verify.returncode == 1 and needle in verify.stderr
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(noisy_gray(np.random.default_rng(0), 20)))
    score = run_cli("score", str(image), "--bundle", str(bundle))
    assert score.returncode == 2 and needle in score.stderr and score.stdout == ""
    serve = run_cli("serve", "--bundle", str(bundle), "--port", str(free_port()), timeout=30)
    assert serve.returncode == 2 and needle in serve.stderr


def test_non_finite_number_anywhere_is_named(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["metrics"] = {"auroc": [0.9, float("inf")]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"'metrics\.auroc\[1\]' is not a finite number"):
        Inspector(bundle)


def test_unknown_manifest_fields_are_accepted(tmp_path):
    """The exporter may add fields (score.rule, normalization): devices must not break."""
    bundle = make_bundle(tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["score_rule"] = {"rule": "max_smoothed", "sigma": 2.0}
    manifest["normalization"] = {"mean": [0.1] * 4, "std": [1.0] * 4}
    manifest["threshold"]["rule"] = "max_smoothed"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert Inspector(bundle).threshold == 5.0


def _odd_folder(folder):
    folder.mkdir()
    rng = np.random.default_rng(1)
    (folder / "a_good.png").write_bytes(png_bytes(noisy_gray(rng, 5)))
    (folder / "b_anim.gif").write_bytes(animated_gif())
    still = Image.fromarray(noisy_gray(rng, 5))
    (folder / "c_still.gif").write_bytes(encode(still, "GIF"))
    (folder / "d_noextension").write_bytes(png_bytes(noisy_gray(rng, 5)))
    (folder / "e_dangling.png").symlink_to(folder / "does-not-exist.png")
    (folder / "f_pages.tiff").write_bytes(multipage_tiff())
    (folder / "g_wide.tif").write_bytes(tiff_32bit())
    (folder / "h_notes.txt").write_text("operator notes")
    (folder / ".hidden.png").write_bytes(b"editor litter")
    return folder


def test_folder_scoring_gives_every_file_a_line(tmp_path):
    bundle = make_bundle(tmp_path / "b", threshold=1.0)
    folder = _odd_folder(tmp_path / "imgs")
    result = run_cli("score", str(folder), "--bundle", str(bundle))
    lines = {os.path.basename(x["path"]): x for x in map(json.loads, result.stdout.splitlines())}
    assert result.returncode == 1
    assert sorted(lines) == [".hidden.png", "a_good.png", "b_anim.gif", "c_still.gif",
                             "d_noextension", "e_dangling.png", "f_pages.tiff", "g_wide.tif",
                             "h_notes.txt"]  # fmt: skip
    for ok in ("a_good.png", "c_still.gif", "d_noextension"):
        assert "score" in lines[ok] and "error" not in lines[ok], lines[ok]
    expected = {"b_anim.gif": "2 pages/frames", "e_dangling.png": "dangling symbolic link",
                "f_pages.tiff": "3 pages/frames", "g_wide.tif": "outside 0..65535",
                "h_notes.txt": "unknown or unsupported image format",
                ".hidden.png": "unknown or unsupported image format"}  # fmt: skip
    for name, needle in expected.items():
        assert needle in lines[name]["error"], lines[name]
        assert "object at 0x" not in lines[name]["error"]


def test_one_failing_heatmap_write_does_not_stop_the_batch(tmp_path):
    bundle = make_bundle(tmp_path / "b", threshold=1.0)
    rng = np.random.default_rng(2)
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"img{k}.png")
        paths[-1].write_bytes(png_bytes(noisy_gray(rng, 5)))
    heat = tmp_path / "heat"
    (heat / "img1.heatmap.png").mkdir(parents=True)  # the write for img1 cannot succeed
    result = run_cli("score", *map(str, paths), "--bundle", str(bundle), "--heatmaps", str(heat))
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [x["path"] for x in lines] == [str(p) for p in paths]
    assert all("score" in x for x in lines)
    assert "heatmap" in lines[0] and "heatmap" in lines[2]
    assert "cannot write" in lines[1]["heatmap_error"] and result.returncode == 1
    assert "Traceback" not in result.stderr


def test_score_piped_into_head_exits_quietly(tmp_path):
    bundle = make_bundle(tmp_path / "b", threshold=1.0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    image = png_bytes(noisy_gray(np.random.default_rng(3), 5))
    for k in range(300):
        (folder / f"{k:04d}.png").write_bytes(image)
    cmd = (f"{sys.executable} -m granvae_edge score {folder} --bundle {bundle} --threads 1 "
           "| head -n 1")  # fmt: skip
    result = subprocess.run(
        ["bash", "-c", cmd], capture_output=True, text=True, env=edge_env(), timeout=120
    )
    assert len(result.stdout.splitlines()) == 1 and "score" in json.loads(result.stdout)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
