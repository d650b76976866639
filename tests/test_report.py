"""The sweep report: a real (tiny) sweep in, a self-contained HTML page with its PNGs out.

One real run_sweep (two trainable granularities and a deliberately broken
g=99) is shared by the module; the choices the report makes (best point per
capacity, best candidate) are tested on hand-made tables.
"""

from __future__ import annotations

import base64
import html
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from granvae.config import load_settings
from granvae.data import generate, write_dataset
from granvae.report import best_overall, best_per_capacity, build_report, pick_best, read_sweep
from granvae.report.plots import plot_elbo_vs_granularity
from granvae.sweep import run_sweep

FIGURES = (
    "elbo_vs_granularity",
    "metrics_vs_granularity",
    "traversals",
    "reconstructions",
    "heatmaps",
)
EVALUATION = {"iwae_k": 2, "iwae_images": 16, "latency_repeats": 2,
              "disentanglement_train": 100, "disentanglement_test": 50,
              "factor_vae_votes": 20, "dci_estimators": 2}  # fmt: skip


def _settings(granularities: list[int], disentanglement: bool):
    return load_settings(None, {
        "model": {"arch": "conv", "latent_dim": 4, "hidden": 32},
        "train": {"epochs": 1, "batch_size": 32},
        "sweep": {"granularities": granularities, "betas": [1.0], "workers": 1},
        "evaluation": {**EVALUATION, "disentanglement": disentanglement},
    })  # fmt: skip


def _sweep(root: Path, kind: str, granularities: list[int], n_train: int) -> Path:
    splits, meta = generate(kind, n_train, 64, 64, seed=0, image_size=32)
    write_dataset(root / "data", splits, meta)
    settings = _settings(granularities, disentanglement=kind == "surfaces")
    run_sweep(settings, root / "data", root / "sweep", progress=False)
    return root / "sweep"


@pytest.fixture(scope="module")
def surfaces_report(tmp_path_factory) -> Path:
    """A real surfaces sweep (g=1, 2 and a broken g=99) and its report."""
    sweep = _sweep(tmp_path_factory.mktemp("surfaces"), "surfaces", [1, 2, 99], 128)
    pd.DataFrame({"candidate_id": ["g2-b1-d4-s0", "g1-b1-d4-s0"], "rank": [1, 2]}).to_csv(
        sweep / "decision.csv", index=False
    )  # g=2 wins, so the g=1 partner is drawn beside it
    (sweep / "decision.md").write_text("# Candidate selection\n\ng2-b1-d4-s0 wins: fixture\n")
    return build_report(sweep)


def test_report_embeds_every_figure_and_names_the_failure(surfaces_report: Path) -> None:
    page = surfaces_report.read_text()
    for name in FIGURES:
        png = (surfaces_report.parent / f"{name}.png").read_bytes()
        assert base64.b64encode(png).decode() in page, f"{name}.png is not embedded"
    assert 'src="http' not in page and "<link" not in page  # self-contained
    table = pd.read_csv(surfaces_report.parents[1] / "results.csv").set_index("candidate_id")
    assert table.loc["g99-b1-d4-s0", "status"] == "failed"
    assert "g99-b1-d4-s0" in page
    assert html.escape(table.loc["g99-b1-d4-s0", "reason"]) in page
    assert "Defect recall per class" in page and "scratch" in page
    assert "Best candidate: g2-b1-d4-s0" in page and "g2-b1-d4-s0 wins: fixture" in page


def test_every_png_is_a_real_picture(surfaces_report: Path) -> None:
    pngs = sorted(surfaces_report.parent.rglob("*.png"))
    names = {p.relative_to(surfaces_report.parent).as_posix() for p in pngs}
    for cid in ("g1-b1-d4-s0", "g2-b1-d4-s0"):  # best and the g=1 partner, one of each
        for fig in ("traversals", "reconstructions", "heatmaps"):
            assert f"candidates/{cid}/{fig}.png" in names
    for path in pngs:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("L"), dtype=float)
        assert min(pixels.shape) >= 200 and path.stat().st_size > 10_000, path
        assert pixels.std() > 10, f"{path} is (nearly) blank"


def _row(g: int, beta: float, elbo: float, seed: int = 0, status: str = "finished") -> dict:
    return {"candidate_id": f"g{g}-b{beta:g}-d8-s{seed}", "granularity": g, "beta": beta,
            "latent_dim": 8, "seed": seed, "status": status,
            "reason": None if status == "finished" else "NonFiniteError: loss",
            "elbo": elbo if status == "finished" else math.nan,
            "recall_at_far": math.nan}  # fmt: skip


def _v_table() -> pd.DataFrame:
    """beta=1 peaks at g=2, beta=4 at g=4 (seed mean, not the single best seed), beta=8 at g=8."""
    elbos = {
        1.0: [-100, -90, -95, -110],
        4.0: [-120, -118, -105, -108],
        8.0: [-140, -130, -120, -101],
    }
    rows = [_row(g, b, e) for b, es in elbos.items() for g, e in zip([1, 2, 4, 8], es, strict=True)]
    rows += [_row(2, 4.0, -80.0, seed=1), _row(2, 4.0, -200.0, seed=2)]  # mean -132.7 at g=2
    rows += [_row(4, 1.0, 0.0, seed=1, status="failed")]  # NaN must not win anything
    return pd.DataFrame(rows)


def test_best_point_per_capacity_is_the_highest_seed_mean_elbo() -> None:
    table = _v_table()
    best = best_per_capacity(table)
    assert best == {
        (1.0, 8): {"granularity": 2, "elbo": -90.0},
        (4.0, 8): {"granularity": 4, "elbo": -105.0},
        (8.0, 8): {"granularity": 8, "elbo": -101.0},
    }
    assert best_overall(table) == {"beta": 1.0, "latent_dim": 8, "granularity": 2, "elbo": -90.0}
    fig, marked = plot_elbo_vs_granularity(table)
    assert marked == best and len(fig.axes) == 2


def test_best_candidate_follows_decision_then_recall_then_elbo(tmp_path: Path) -> None:
    table = _v_table()
    table.to_csv(tmp_path / "results.csv", index=False)
    assert pick_best(read_sweep(tmp_path))[0] == "g2-b4-d8-s1"  # no recall: best single ELBO
    table.loc[table["candidate_id"] == "g8-b8-d8-s0", "recall_at_far"] = 0.9
    table.loc[table["candidate_id"] == "g1-b1-d8-s0", "recall_at_far"] = 0.5
    table.to_csv(tmp_path / "results.csv", index=False)
    assert pick_best(read_sweep(tmp_path))[0] == "g8-b8-d8-s0"
    pd.DataFrame({"candidate_id": ["g1-b1-d8-s0", "g8-b8-d8-s0"], "rank": [1, 2]}).to_csv(
        tmp_path / "decision.csv", index=False
    )
    assert pick_best(read_sweep(tmp_path))[0] == "g1-b1-d8-s0"
    pd.DataFrame({"candidate_id": ["g1-b1-d8-s0", "g8-b8-d8-s0"], "rank": [None, None]}).to_csv(
        tmp_path / "decision.csv", index=False
    )  # selection ran and nothing passed: the pictured model is not called "best"
    best, why = pick_best(read_sweep(tmp_path))
    assert best == "g8-b8-d8-s0" and why.endswith("no candidate passed the gates (decision.md), "
                                                  "so nothing ships")


def test_all_failed_sweep_still_writes_a_report(surfaces_report: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(surfaces_report.parents[1], sweep, ignore=shutil.ignore_patterns("report"))
    table = pd.read_csv(sweep / "results.csv")
    metrics = table.columns[table.columns.get_loc("device") + 1 :]
    table[metrics] = math.nan
    table["status"], table["reason"] = "failed", "RuntimeError: out of memory"
    table.to_csv(sweep / "results.csv", index=False)
    page = build_report(sweep).read_text()
    assert f"All {len(table)} candidates failed" in page
    assert page.count("RuntimeError: out of memory") == len(table)
    assert "data:image/png" not in page


def test_defect_free_data_skips_heatmaps_with_a_note(tmp_path: Path) -> None:
    page = build_report(_sweep(tmp_path, "shapes", [1], 64)).read_text()
    assert "no defect images" in page
    assert not (tmp_path / "sweep" / "report" / "heatmaps.png").exists()
    assert (tmp_path / "sweep" / "report" / "traversals.png").exists()


def test_heatmaps_draw_negative_gaussian_nll_maps() -> None:
    """A Gaussian decoder's per-pixel NLL is negative; the colour range must follow it."""
    from granvae.report.pictures import plot_heatmaps

    rng = np.random.default_rng(0)
    maps = -2.0 + 0.1 * rng.random((2, 16, 16))
    masks = np.zeros((2, 16, 16), dtype=np.uint8)
    masks[1, 4:8, 4:8] = 1
    images = rng.integers(0, 255, (2, 1, 16, 16)).astype(np.uint8)
    fig = plot_heatmaps(images, maps, masks, np.array([1.0, 5.0]), ["good", "blob"], 3.0, "t")
    fig.canvas.draw()
    shown = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "inferno"]
    lo, hi = shown[0].get_clim()
    assert lo < hi <= -1.9


def _seeded_table(best_g: dict[float, int], noise: float, seeds: int = 3) -> pd.DataFrame:
    """ELBO = -100 - 5 |g - best_g(beta)| + a seed effect shared by every g + small noise."""
    rng = np.random.default_rng(0)
    rows = []
    for beta, best in best_g.items():
        for g in (1, 2, 4, 8):
            for s in range(seeds):
                elbo = -100.0 - 5.0 * abs(g - best) - 10.0 * s + noise * rng.standard_normal()
                rows.append(_row(g, beta, elbo, seed=s))
    return pd.DataFrame(rows)


def test_the_trajectory_is_called_a_v_only_when_the_intervals_show_one() -> None:
    from granvae.report.intervals import v_verdict

    dip = {1.0: 8, 4.0: 1, 16.0: 8}  # best g falls to 1 at beta=4 and rises again
    shows, text = v_verdict(_seeded_table(dip, noise=0.2))
    assert shows and text.startswith("The intervals show a V") and "β=4: best g=1" in text
    # The same means with seed noise larger than the g effect: every g is tied, no V.
    shows, text = v_verdict(_seeded_table(dip, noise=20.0))
    assert not shows and "do not show a V" in text
    # One seed per configuration: the best g moves, but nothing is shown.
    shows, text = v_verdict(_seeded_table(dip, noise=0.2, seeds=1))
    assert not shows and "(tied: [1, 2, 4, 8])" in text
    shows, text = v_verdict(_seeded_table({1.0: 1, 4.0: 8, 16.0: 1}, noise=0.2))
    assert not shows and "inverted V" in text
