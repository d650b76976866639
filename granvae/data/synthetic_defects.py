"""Synthetic defects on a line's own good images: how to choose without labelled defects.

A new line has good images only. To choose a score rule (and tile size) and to estimate
how much it will catch, defects are drawn onto *held-out* good images of the line itself,
in kinds generic enough that no one kind is the real line's defect:

    patch    a piece of the surface from elsewhere (the same image or another good image of
             the line) pasted over an ellipse: foreign material, a misplaced component
    scratch  a thin straight line, lighter or darker than its surroundings
    smear    an ellipse whose content is dragged along one direction (motion blur) and
             dimmed or brightened: oil, a wiped stain
    dent     an ellipse lit from one side: a bright flank and a dark flank (a derivative of
             a Gaussian bump), what a dent or a bump looks like under raking light
    perlin   an irregular blob (thresholded smooth value noise, the DRAEM recipe) whose
             pixels are shifted in brightness: a stain or a coating flaw with a ragged edge

The parameters (``SyntheticParams``) are documented field by field; sizes are in pixels
when ``size_px`` is set (a real line's defects have a physical size) or else a share of the
image side. The mask is exactly the set of pixels that changed: a change smaller than
``min_delta`` grey levels (in every channel) is undone, so pixels outside the mask are the
clean image's own and every pixel inside moved by at least ``min_delta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, shift, zoom

SYNTHETIC_CLASSES = ("patch", "scratch", "smear", "dent", "perlin")


@dataclass(frozen=True)
class SyntheticParams:
    """How synthetic defects are drawn (every range is sampled uniformly per defect)."""

    size_frac: tuple[float, float] = (0.08, 0.25)  # defect extent / min(H, W), if no size_px
    size_px: tuple[float, float] | None = None  # defect extent in px (overrides size_frac)
    contrast: tuple[float, float] = (20.0, 60.0)  # grey levels added or removed (scratch,
    # smear, dent flank, perlin); the sign is drawn per defect
    scratch_width: tuple[float, float] = (1.0, 2.5)  # px, full width of the line
    smear_drag: tuple[float, float] = (0.3, 0.6)  # drag length / defect extent
    perlin_cells: tuple[int, int] = (2, 5)  # noise lattice cells across the defect's box
    min_delta: float = 4.0  # grey levels; smaller changes are undone (outside the mask)


def _extent(h: int, w: int, params: SyntheticParams, rng: np.random.Generator) -> float:
    lo, hi = params.size_px or tuple(f * min(h, w) for f in params.size_frac)
    return float(max(3.0, rng.uniform(lo, hi)))


def _centre(
    h: int, w: int, margin: float, region: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """(y, x) of the defect: uniform over ``region`` (H, W bool) if given, else over the
    image less ``margin`` px at each border."""
    if region is not None and region.any():
        ys, xs = np.nonzero(region)
        i = int(rng.integers(len(ys)))
        return np.asarray([ys[i], xs[i]], np.float64)
    m = min(margin, (min(h, w) - 1) / 2.0)
    return np.asarray([rng.uniform(m, h - 1 - m), rng.uniform(m, w - 1 - m)])


def _ellipse(h: int, w: int, centre: np.ndarray, extent: float, rng) -> np.ndarray:
    """Bool (H, W): an ellipse of diameter ``extent`` along its major axis, random aspect
    and orientation."""
    a = extent / 2.0
    b = a * rng.uniform(0.4, 1.0)
    t = rng.uniform(0.0, np.pi)
    ys, xs = np.indices((h, w), dtype=np.float64)
    dy, dx = ys - centre[0], xs - centre[1]
    u = dx * np.cos(t) + dy * np.sin(t)
    v = -dx * np.sin(t) + dy * np.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _patch(img, extent, centre, rng, donor, params) -> np.ndarray:
    _, h, w = img.shape
    mask = _ellipse(h, w, centre, extent, rng)
    source = img if donor is None else donor.astype(np.float64)
    # The same surface from elsewhere: the source moved by at least one defect extent.
    angle = rng.uniform(0.0, 2.0 * np.pi)
    dist = rng.uniform(extent, max(extent + 1.0, min(h, w) / 2.0))
    offset = np.asarray([np.sin(angle), np.cos(angle)]) * dist
    moved = np.stack([shift(ch, offset, order=1, mode="wrap") for ch in source])
    out = img.copy()
    out[:, mask] = moved[:, mask]
    return out


def _scratch(img, extent, centre, rng, _donor, params) -> np.ndarray:
    _, h, w = img.shape
    t = rng.uniform(0.0, np.pi)
    half = extent / 2.0 * np.asarray([np.sin(t), np.cos(t)])
    p0, p1 = centre - half, centre + half
    ys, xs = np.indices((h, w), dtype=np.float64)
    seg = p1 - p0
    s = np.clip(((ys - p0[0]) * seg[0] + (xs - p0[1]) * seg[1]) / max(seg @ seg, 1e-9), 0, 1)
    dist = np.hypot(ys - (p0[0] + s * seg[0]), xs - (p0[1] + s * seg[1]))
    width = rng.uniform(*params.scratch_width)
    amplitude = _sign(rng) * rng.uniform(*params.contrast)
    return img + amplitude * (dist <= width / 2.0)[None]


def _smear(img, extent, centre, rng, _donor, params) -> np.ndarray:
    _, h, w = img.shape
    mask = _ellipse(h, w, centre, extent, rng)
    drag = extent * rng.uniform(*params.smear_drag)
    t = rng.uniform(0.0, np.pi)
    steps = np.linspace(0.0, drag, max(2, int(np.ceil(drag)) + 1))
    direction = np.asarray([np.sin(t), np.cos(t)])
    dragged = np.mean([np.stack([shift(ch, s * direction, order=1, mode="nearest")
                                 for ch in img]) for s in steps], axis=0)  # fmt: skip
    tint = _sign(rng) * rng.uniform(*params.contrast) / 2.0
    out = img.copy()
    out[:, mask] = dragged[:, mask] + tint
    return out


def _dent(img, extent, centre, rng, _donor, params) -> np.ndarray:
    _, h, w = img.shape
    sigma = extent / 4.0
    t = rng.uniform(0.0, 2.0 * np.pi)
    ys, xs = np.indices((h, w), dtype=np.float64)
    dy, dx = ys - centre[0], xs - centre[1]
    bump = np.exp(-(dy**2 + dx**2) / (2.0 * sigma**2))
    along = (dy * np.sin(t) + dx * np.cos(t)) / sigma
    # d/du of the bump, scaled so its extremes (at u = +-sigma) are +-contrast.
    shading = -along * bump * np.exp(0.5) * rng.uniform(*params.contrast)
    return img + shading[None]


def _value_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in [0, 1]: a (cells + 1)^2 random lattice, cubic-interpolated."""
    lattice = rng.random((cells + 1, cells + 1))
    up = zoom(lattice, (shape[0] / (cells + 1), shape[1] / (cells + 1)), order=3, mode="nearest")
    up = up[: shape[0], : shape[1]]
    return (up - up.min()) / max(float(np.ptp(up)), 1e-9)


def _perlin(img, extent, centre, rng, _donor, params) -> np.ndarray:
    _, h, w = img.shape
    side = max(4, int(round(extent)))
    octaves = [_value_noise((side, side), int(rng.integers(params.perlin_cells[0],
                                                           params.perlin_cells[1] + 1)) * k, rng)
               for k in (1, 2)]  # fmt: skip
    noise = (2.0 * octaves[0] + octaves[1]) / 3.0
    ys, xs = np.indices((side, side), dtype=np.float64)
    r = np.hypot(ys - (side - 1) / 2.0, xs - (side - 1) / 2.0) / (side / 2.0)
    blob = (noise * np.clip(1.2 - r, 0.0, 1.0)) > 0.35  # ragged, fading towards the box edge
    if not blob.any():
        blob[side // 2, side // 2] = True
    y0, x0 = int(round(centre[0])) - side // 2, int(round(centre[1])) - side // 2
    mask = np.zeros((h, w), bool)
    ys0, xs0 = max(0, y0), max(0, x0)
    ys1, xs1 = min(h, y0 + side), min(w, x0 + side)
    mask[ys0:ys1, xs0:xs1] = blob[ys0 - y0 : ys1 - y0, xs0 - x0 : xs1 - x0]
    amplitude = _sign(rng) * rng.uniform(*params.contrast)
    shade = gaussian_filter(mask.astype(np.float64), 0.7) * amplitude
    return img + (shade * mask)[None]


_DRAW = {"patch": _patch, "scratch": _scratch, "smear": _smear, "dent": _dent,
         "perlin": _perlin}  # fmt: skip


def synthesize(
    image: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    params: SyntheticParams | None = None,
    donor: np.ndarray | None = None,
    region: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One defect of ``kind`` on a uint8 (C, H, W) good image -> (defective uint8 image,
    bool (H, W) mask of exactly the changed pixels). ``donor`` (C, H, W): another good
    image a ``patch`` is cut from (else the image itself); ``region`` (H, W) bool: where
    the defect's centre may fall (e.g. the part, not the fixture)."""
    if kind not in _DRAW:
        raise ValueError(f"unknown synthetic defect {kind!r}; valid: {', '.join(_DRAW)}")
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"synthesize needs a uint8 (C, H, W) image, got {image.dtype} "
                         f"{image.shape}")  # fmt: skip
    params = params or SyntheticParams()
    _, h, w = image.shape
    clean = image.astype(np.float64)
    extent = _extent(h, w, params, rng)
    centre = _centre(h, w, extent / 2.0, region, rng)
    drawn = _DRAW[kind](clean, extent, centre, rng, donor, params)
    out = np.clip(np.rint(drawn), 0, 255)
    changed = (np.abs(out - clean) >= params.min_delta).any(axis=0)
    out = np.where(changed[None], out, clean).astype(np.uint8)
    return out, (out != image).any(axis=0)


def synthetic_set(
    images: np.ndarray,
    rng: np.random.Generator,
    kinds: tuple[str, ...] = SYNTHETIC_CLASSES,
    params: SyntheticParams | None = None,
    regions: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every held-out good image (N, C, H, W) gets one defect, kinds dealt in turn:
    (images, masks (N, H, W), kind names (N,)). A ``patch`` takes its surface from the
    next image (the line's own other parts). Images where nothing changed (a defect that
    fell on saturated pixels) keep an empty mask; callers drop them with ``masks.any``."""
    out = np.empty_like(images)
    masks = np.zeros((len(images), *images.shape[2:]), bool)
    names = np.asarray([kinds[i % len(kinds)] for i in range(len(images))])
    for i, (image, kind) in enumerate(zip(images, names, strict=True)):
        donor = images[(i + 1) % len(images)] if len(images) > 1 else None
        region = None if regions is None else regions[i]
        out[i], masks[i] = synthesize(image, str(kind), rng, params, donor, region)
    return out, masks, names
