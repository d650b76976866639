"""Pictures that need a trained candidate: latent traversals, reconstructions, heatmaps.

Each model-based picture is computed by one small function (numpy out) and
drawn by another, so what the model does and how it looks are separate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from granvae.data import DatasetMeta, Split
from granvae.distributions import recon_mean
from granvae.models import FactorizedVAE, to_unit
from granvae.objectives import make_groups
from granvae.report.plots import new_figure
from granvae.report.tables import SweepView
from granvae.scoring import InspectionHead, load_head, score_images

TRAVERSAL_SPAN = 2.5
TRAVERSAL_STEPS = 8


@dataclass
class LoadedCandidate:
    """A finished candidate rebuilt from its folder, with what the pictures need."""

    candidate_id: str
    granularity: int
    beta: float
    model: FactorizedVAE
    groups: list[list[int]]
    head: InspectionHead
    threshold: float | None


def load_candidate(view: SweepView, candidate_id: str) -> LoadedCandidate:
    """Rebuild model, groups and inspection head exactly as evaluate.py scored them."""
    row = view.row(candidate_id)
    cdir = view.candidate_dir(candidate_id)
    head = load_head(cdir, int(row["granularity"]))  # the rule and statistics it was scored with
    model, groups = head.model, make_groups(head.model.config.latent_dim, int(row["granularity"]))
    thr_file = cdir / "threshold.json"
    threshold = json.loads(thr_file.read_text())["value"] if thr_file.exists() else None
    return LoadedCandidate(
        candidate_id, int(row["granularity"]), float(row["beta"]), model, groups, head, threshold
    )


def display(image: np.ndarray) -> np.ndarray:
    """CHW in [0, 1] -> what imshow takes: HW for grey, HWC for colour."""
    return image[0] if image.shape[0] == 1 else np.clip(image.transpose(1, 2, 0), 0, 1)


def model_view(model: FactorizedVAE, images: np.ndarray, masks: np.ndarray | None = None):
    """What a tiled model sees of full-size parts: one tile, centred on the defect when a
    mask shows one, else on the part (whole-image models get the images unchanged)."""
    size = model.config.image_size
    if images.shape[-2:] == (size, size):
        return images
    h, w = images.shape[-2:]
    out = []
    for i, image in enumerate(images.reshape(-1, *images.shape[-3:])):
        cy, cx = h // 2, w // 2
        if masks is not None and masks[i].any():
            ys, xs = np.nonzero(masks[i])
            cy, cx = int(ys.mean()), int(xs.mean())
        y = min(max(cy - size // 2, 0), h - size)
        x = min(max(cx - size // 2, 0), w - size)
        out.append(image[:, y : y + size, x : x + size])
    return np.stack(out).reshape(*images.shape[:-2], size, size)


@torch.no_grad()
def traversal_grid(
    model: FactorizedVAE,
    image: np.ndarray,
    steps: int = TRAVERSAL_STEPS,
    span: float = TRAVERSAL_SPAN,
) -> np.ndarray:
    """(D, steps, C, H, W): decode mu with one dimension swept over [-span, span].

    Holding the others at the image's own posterior mean shows what each
    latent controls for *this* part, which is what an engineer can judge.
    """
    mu, _ = model.encode(to_unit(model_view(model, image[None])))
    values = torch.linspace(-span, span, steps)
    dims = mu.shape[1]
    z = mu.repeat(dims * steps, 1).view(dims, steps, dims)
    for d in range(dims):
        z[d, :, d] = values
    out = recon_mean(model.config.likelihood, model.decode(z.view(dims * steps, dims)))
    return out.view(dims, steps, *out.shape[1:]).numpy()


def _group_of(groups: list[list[int]]) -> dict[int, int]:
    return {d: k for k, dims in enumerate(groups) for d in dims}


def draw_traversal(ax, grid: np.ndarray, groups: list[list[int]], title: str) -> None:
    """One traversal grid as a mosaic; rows labelled and framed in their group's colour."""
    dims, steps, _, h, w = grid.shape
    pad = 2
    mosaic = np.ones((dims * (h + pad), steps * (w + pad), *display(grid[0, 0]).shape[2:]))
    for d in range(dims):
        for s in range(steps):
            mosaic[d * (h + pad) : d * (h + pad) + h, s * (w + pad) : s * (w + pad) + w] = display(
                grid[d, s]
            )
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    group = _group_of(groups)
    ax.set_yticks(
        [d * (h + pad) + h / 2 for d in range(dims)],
        [f"z{d} · group {group[d] + 1}" for d in range(dims)],
    )
    for d, label in enumerate(ax.get_yticklabels()):
        label.set_color(f"C{group[d] % 10}")
    for k, members in enumerate(groups):
        top = members[0] * (h + pad) - pad / 2
        ax.add_patch(
            Rectangle(
                (-pad / 2, top),
                steps * (w + pad),
                len(members) * (h + pad),
                fill=False,
                edgecolor=f"C{k % 10}",
                linewidth=2,
                clip_on=False,
            )
        )
    ax.set_xticks(
        [s * (w + pad) + w / 2 for s in range(steps)],
        [f"{v:+.1f}" for v in np.linspace(-TRAVERSAL_SPAN, TRAVERSAL_SPAN, steps)],
        fontsize=7,
    )
    ax.set_xlabel("value of the swept latent (prior std units)")
    ax.set_title(title, fontsize=10)


def plot_traversals(panels: list[tuple[str, np.ndarray, list[list[int]]]]) -> Figure:
    """Traversal grids side by side (best candidate next to its g=1 counterpart)."""
    dims = max(grid.shape[0] for _, grid, _ in panels)
    fig = new_figure(5.2 * len(panels), 1.0 + 0.62 * dims)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
    for ax, (title, grid, groups) in zip(axes, panels, strict=True):
        draw_traversal(ax, grid, groups, title)
    fig.suptitle(
        "Latent traversals: each row sweeps one latent, the others held at\n"
        "the first validation image's code; coloured frames = independent groups",
        fontsize=10,
    )
    return fig


def traversal_title(c: LoadedCandidate, role: str) -> str:
    return f"{role}: {c.candidate_id} (g={c.granularity}, β={c.beta:g})"


@torch.no_grad()
def reconstruct(model: FactorizedVAE, images: np.ndarray) -> np.ndarray:
    """Posterior-mean reconstructions in [0, 1]: what the model thinks the part looks like."""
    params = model.decode(model.encode(to_unit(images))[0])
    return recon_mean(model.config.likelihood, params).numpy()


def example_indices(labels: np.ndarray, per_class: int, limit: int) -> list[int]:
    """First `per_class` images of each class present (good first), at most `limit`."""
    picks = [int(i) for k in np.unique(labels) for i in np.flatnonzero(labels == k)[:per_class]]
    return picks[:limit]


def plot_reconstructions(
    originals: np.ndarray, recons: np.ndarray, captions: list[str], title: str
) -> Figure:
    """Originals (top row) over reconstructions (bottom row)."""
    n = len(originals)
    fig = new_figure(max(1.6 * n + 0.8, 6.0), 3.8)
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        for r, (img, name) in enumerate(
            ((originals[i], "original"), (recons[i], "reconstruction"))
        ):
            axes[r, i].imshow(display(img), cmap="gray", vmin=0, vmax=1)
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
            if i == 0:
                axes[r, i].set_ylabel(name)
        axes[0, i].set_title(captions[i], fontsize=9)
    fig.suptitle(title)
    return fig


def candidate_reconstructions(c: LoadedCandidate, test: Split, meta: DatasetMeta) -> Figure:
    per_class = max(2, 8 // len(np.unique(test.labels)))  # defect-free data: 8 good parts
    idx = example_indices(test.labels, per_class=per_class, limit=8)
    images = model_view(c.model, test.images[idx], test.masks[idx])
    captions = [meta.class_names[test.labels[i]] for i in idx]
    return plot_reconstructions(
        images / 255.0,
        reconstruct(c.model, images),
        captions,
        f"Reconstructions (posterior mean) — {c.candidate_id}",
    )


def _decision_caption(name: str, score: float, threshold: float | None) -> tuple[str, str]:
    if threshold is None:
        return f"{name}\nscore {score:.3g}", "black"
    if score > threshold:
        return f"{name}\nscore {score:.3g} > {threshold:.3g}\nREJECT", "firebrick"
    return f"{name}\nscore {score:.3g} ≤ {threshold:.3g}\nPASS", "darkgreen"


MAP_CEILING = 2.0  # threshold-scaled map value drawn at the top of the colour scale


def threshold_scaled(
    maps: np.ndarray, scores: np.ndarray, threshold: float, tiled: bool
) -> np.ndarray:
    """Maps on the fixed scale the edge uses (granvae_edge Inspector.normalised_map): 1.0 is
    the threshold. A tiled head's score reduces its map, so map / threshold; otherwise each
    map is scaled so its peak is score / threshold (a peak <= 0 gives an all-zero map)."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float64))
    if tiled:
        return maps / threshold
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    factor = np.where(peaks > 0, np.asarray(scores, np.float64) / threshold / np.where(
        peaks > 0, peaks, 1.0), 0.0)  # fmt: skip
    return maps * factor[:, None, None]


def plot_heatmaps(
    images: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray,
    scores: np.ndarray,
    captions: list[str],
    threshold: float | None,
    title: str,
    map_label: str = "anomaly map",
    fixed_scale: bool = False,
) -> Figure:
    """Per example: the part with the true defect outlined, then the anomaly map on top.

    ``fixed_scale``: the maps are threshold-scaled (threshold_scaled) and drawn 0..MAP_CEILING
    for every figure, as the edge's heatmaps are, so a good part looks calm."""
    n = len(images)
    fig = new_figure(max(1.8 * n + 1.4, 8.0), 4.6)
    axes = fig.subplots(2, n, squeeze=False)
    if fixed_scale:
        vmin, vmax = 0.0, MAP_CEILING
    else:
        # Per-pixel NLL is negative under a Gaussian decoder (a density, not a probability),
        # so the colour range comes from the maps themselves, not from zero.
        vmin, vmax = (float(v) for v in np.percentile(maps, [1, 99]))
        vmax = vmax if vmax > vmin else vmin + 1.0
    for i in range(n):
        grey = display(images[i] / 255.0)
        axes[0, i].imshow(grey, cmap="gray", vmin=0, vmax=1)
        axes[1, i].imshow(grey, cmap="gray", vmin=0, vmax=1)
        shown = axes[1, i].imshow(maps[i], cmap="inferno", alpha=0.6, vmin=vmin, vmax=vmax)
        for ax in axes[:, i]:
            if masks[i].any():
                ax.contour(masks[i], levels=[0.5], colors="cyan", linewidths=1)
            ax.set_xticks([])
            ax.set_yticks([])
        text, colour = _decision_caption(captions[i], float(scores[i]), threshold)
        axes[0, i].set_title(text, fontsize=8, color=colour)
    axes[0, 0].set_ylabel("part (cyan: true defect)")
    axes[1, 0].set_ylabel("anomaly map")
    fig.colorbar(
        shown,
        ax=axes.ravel().tolist(),
        fraction=0.03,
        pad=0.01,
        aspect=30,
        label=map_label,
    )
    fig.suptitle(title)
    return fig


def has_defects(test: Split) -> bool:
    return bool((test.labels > 0).any())


def candidate_heatmaps(c: LoadedCandidate, test: Split, meta: DatasetMeta) -> Figure:
    """One good reference, then up to two images per defect class, scored by the head."""
    good = [int(i) for i in np.flatnonzero(test.labels == 0)[:1]]
    idx = good + [i for i in example_indices(test.labels, 2, 99) if test.labels[i] > 0]
    out = score_images(c.head, test.images[idx])
    captions = [meta.class_names[test.labels[i]] for i in idx]
    title = f"Anomaly heatmaps on test parts — {c.candidate_id} (threshold from validation)"
    maps, label, fixed = out["anomaly_map"], f"anomaly map of the {c.head.score_kind} rule", False
    if c.threshold is not None and c.threshold > 0:
        maps = threshold_scaled(maps, out["score"], c.threshold, c.head.tiling is not None)
        label, fixed = f"{c.head.score_kind} map, 1.0 = threshold (as on the edge)", True
    return plot_heatmaps(
        test.images[idx],
        maps,
        test.masks[idx],
        out["score"],
        captions,
        c.threshold,
        title,
        map_label=label,
        fixed_scale=fixed,
    )
