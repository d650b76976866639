"""Defects of rising complexity drawn onto inspection images, with exact pixel masks.

    blob     low complexity: one large, soft, dark or bright spot
    scratch  medium: a thin straight or slightly curved line
    crack    high: a thin dark random walk with 3-5 branches

Severity in (0, 1] scales size and contrast together. At 0.2 a defect is a few tens of gray
levels against +/-12 levels of machining marks and sensor noise of 3: genuinely hard. At 1.0
it is obvious.

Every random number a defect needs is drawn before severity is applied, and always the same
count of them, so one rng state gives the same geometry at every severity: a higher severity
is then a longer/wider/stronger version of the same defect, which makes severity monotone.

The mask is 1 exactly where a pixel changed by at least MASK_MIN_DELTA gray levels; smaller
changes are discarded, so pixels outside the mask are identical to the clean image.

Size. Geometry is drawn for a reference side `scale` (px): by default the image's own
min(H, W), so a defect covers the same share of a 64-px and a 512-px part. A real line's
defects have a physical size instead, so `defect_px` pins it in pixels: at severity 1 the
blob's mask diameter, the scratch's length and the crack's span are all about defect_px
(scale = defect_px / EXTENT_PER_SCALE); lower severities are smaller, as at the default.
Line widths (1-1.5 px) and the crack's 1-px steps are absolute at every scale.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MASK_MIN_DELTA = 4  # gray levels; smaller changes drown in sensor noise (sigma 3)
MAX_BRANCHES = 5
EXTENT_PER_SCALE = 0.6  # a severity-1 scratch is 0.6 * scale long; a blob's mask ~0.56 * scale
SEGMENT_BUDGET = 2**20  # segment-pixel pairs measured at once; bounds memory

DefectField = Callable[[int, int, float, np.random.Generator, float], np.ndarray]


def scale_for(h: int, w: int, defect_px: float | None) -> float:
    """The reference side geometry is drawn for: min(H, W), or the one defect_px implies."""
    if defect_px is None:
        return min(h, w)
    if not defect_px > 0:
        raise ValueError(f"defect_px must be > 0, got {defect_px}")
    return float(defect_px) / EXTENT_PER_SCALE


def _centre(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A point in the central region, which lies on the part for every offset factor."""
    return rng.uniform(0.3, 0.7, size=2) * np.array([w, h], dtype=np.float64)


def _pixel_grid(h: int, w: int) -> np.ndarray:
    """(H*W, 2) pixel-centre coordinates as (x, y)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def _segment_distance(h: int, w: int, segments: np.ndarray, reach: float) -> np.ndarray:
    """(H, W) distance from each pixel centre to the nearest of (K, 2, 2) line segments.

    Each segment is measured only on the pixels of its own box grown by `reach` + 1 (the
    rest get inf, which every caller's profile turns into 0), so a 600-segment crack on a
    512-px part costs a few hundred thousand distances, not 600 full grids. Each measured
    distance is computed exactly as a full-grid pass would, and min is exact, so the
    result is bit-identical to the full grid wherever it is within reach.
    """
    dist = np.full(h * w, np.inf)
    lo = np.floor(segments.min(axis=1) - reach - 1.0).astype(np.int64)  # (K, 2) as (x, y)
    hi = np.ceil(segments.max(axis=1) + reach + 1.0).astype(np.int64)
    span_x, span_y = (hi - lo).max(axis=0)
    oy, ox = np.mgrid[0:span_y, 0:span_x]
    chunk = max(1, SEGMENT_BUDGET // (span_x * span_y))
    for k in range(0, len(segments), chunk):
        xs = lo[k : k + chunk, 0, None] + ox.ravel()[None]  # (k, P) pixel columns
        ys = lo[k : k + chunk, 1, None] + oy.ravel()[None]
        points = np.stack([xs + 0.5, ys + 0.5], axis=-1)
        a = segments[k : k + chunk, 0][:, None, :]
        ab = (segments[k : k + chunk, 1] - segments[k : k + chunk, 0])[:, None, :]
        length2 = np.maximum((ab**2).sum(-1), 1e-12)
        t = np.clip(((points - a) * ab).sum(-1) / length2, 0.0, 1.0)
        nearest = a + t[..., None] * ab
        near = np.sqrt(((points - nearest) ** 2).sum(-1))
        inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        np.minimum.at(dist, (ys * w + xs)[inside], near[inside])
    return dist.reshape(h, w)


def _line_profile(dist: np.ndarray, width: float, amplitude: float) -> np.ndarray:
    """Linear fall-off; width >= 1 px keeps a line 8-connected at any angle."""
    return amplitude * np.clip(1.0 - dist / width, 0.0, 1.0)


def _polyline_segments(points: np.ndarray) -> np.ndarray:
    return np.stack([points[:-1], points[1:]], axis=1)


def blob_field(
    h: int, w: int, severity: float, rng: np.random.Generator, scale: float
) -> np.ndarray:
    """A soft elliptical Gaussian spot; its sign (dark or bright) is random."""
    centre = _centre(h, w, rng)
    sign = rng.choice([-1.0, 1.0])
    aspect = rng.uniform(0.6, 1.0)
    angle = rng.uniform(0.0, np.pi)
    size = scale
    sigma = size * (0.04 + 0.08 * severity)
    amplitude = 6.0 + 54.0 * severity
    rel = _pixel_grid(h, w) - centre
    u = rel[:, 0] * np.cos(angle) + rel[:, 1] * np.sin(angle)
    v = (-rel[:, 0] * np.sin(angle) + rel[:, 1] * np.cos(angle)) / aspect
    field = sign * amplitude * np.exp(-0.5 * (u**2 + v**2) / sigma**2)
    return field.reshape(h, w)


def scratch_field(
    h: int, w: int, severity: float, rng: np.random.Generator, scale: float
) -> np.ndarray:
    """A thin line, slightly bent (a parabola), growing symmetrically from its centre."""
    centre = _centre(h, w, rng)
    angle = rng.uniform(0.0, np.pi)
    size = scale
    curvature = rng.uniform(-0.6, 0.6) / size
    sign = rng.choice([-1.0, 1.0])
    length = size * (0.15 + 0.45 * severity)
    t = np.linspace(-0.5, 0.5, 25) * length
    along = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-along[1], along[0]])
    points = centre + t[:, None] * along + (curvature * t**2)[:, None] * normal
    width = 1.0 + 0.5 * severity
    dist = _segment_distance(h, w, _polyline_segments(points), width)
    return _line_profile(dist, width, sign * (10.0 + 70.0 * severity))


def _walk(start: np.ndarray, heading0: float, turns: np.ndarray, n_steps: int) -> np.ndarray:
    """(n_steps + 1, 2) points of a unit-step random walk with persistent heading."""
    headings = heading0 + np.cumsum(turns[:n_steps])
    steps = np.stack([np.cos(headings), np.sin(headings)], axis=1)
    return np.concatenate([start[None], start + np.cumsum(steps, axis=0)])


def _crack_segments(
    h: int, w: int, severity: float, rng: np.random.Generator, scale: float
) -> np.ndarray:
    """A trunk growing both ways from its start, with branches; all randomness drawn first."""
    size = scale
    half_max = int(np.ceil(0.2 * size))
    branch_max = max(2, int(np.ceil(0.15 * size)))
    start = _centre(h, w, rng)
    heading = rng.uniform(0.0, 2.0 * np.pi)
    trunk_turns = rng.normal(0.0, 0.3, size=(2, half_max))
    n_branches = 3 + int(rng.integers(0, MAX_BRANCHES - 2))
    spawn = rng.uniform(0.1, 0.9, size=MAX_BRANCHES)
    sides = rng.choice([-1.0, 1.0], size=MAX_BRANCHES)
    offsets = rng.uniform(0.7, 1.4, size=MAX_BRANCHES)
    branch_turns = rng.normal(0.0, 0.3, size=(MAX_BRANCHES, branch_max))

    grown = 0.3 + 0.7 * severity
    half_steps = max(1, int(round(half_max * grown)))
    branch_steps = max(1, int(round(branch_max * grown)))
    pieces, halves = [], []
    for side in (0, 1):
        heading_0 = heading + np.pi * side
        halves.append((_walk(start, heading_0, trunk_turns[side], half_steps), heading_0))
        pieces.append(_polyline_segments(halves[-1][0]))
    for k in range(n_branches):
        points, heading_0 = halves[k % 2]
        at = int(spawn[k] * half_max)
        if at >= half_steps:
            continue
        branch_heading = heading_0 + np.cumsum(trunk_turns[k % 2])[at] + sides[k] * offsets[k]
        branch = _walk(points[at + 1], branch_heading, branch_turns[k], branch_steps)
        pieces.append(_polyline_segments(branch))
    return np.concatenate(pieces)


def crack_field(
    h: int, w: int, severity: float, rng: np.random.Generator, scale: float
) -> np.ndarray:
    """A dark branching random walk: thin, long and topologically complex."""
    width = 1.0 + 0.4 * severity
    dist = _segment_distance(h, w, _crack_segments(h, w, severity, rng, scale), width)
    return _line_profile(dist, width, -(10.0 + 75.0 * severity))


DEFECTS: dict[str, DefectField] = {
    "blob": blob_field,
    "scratch": scratch_field,
    "crack": crack_field,
}


def apply_delta(image: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Add an intensity field to every channel; keep only meaningful changes, return the mask."""
    original = image.astype(np.float64)
    changed = np.clip(np.rint(original + delta), 0.0, 255.0)
    diff = np.abs(changed - original)
    magnitude = diff.max(axis=0) if image.ndim == 3 else diff
    mask = magnitude >= MASK_MIN_DELTA
    out = np.where(mask, changed, original).astype(np.uint8)
    return out, mask.astype(np.uint8)


def render_defect(
    image: np.ndarray,
    cls_name: str,
    severity: float,
    rng: np.random.Generator,
    region: np.ndarray | None = None,
    defect_px: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect onto a uint8 (C, H, W) or (H, W) image; returns (image, mask (H, W)).

    `defect_px` pins the defect's size in pixels (module docstring); None keeps it a fixed
    share of the image side, as generated data sets always had.

    `region` (H, W) in [0, 1] scales the defect, e.g. Surfaces.part_region, so that a crack
    never runs onto the fixture behind the part. The mask can be empty only if the image
    saturates or the region is zero where the defect falls.
    """
    if cls_name not in DEFECTS:
        raise ValueError(f"unknown defect class {cls_name!r}; valid: {sorted(DEFECTS)}")
    if not 0.0 < float(severity) <= 1.0:
        raise ValueError(f"severity must be in (0, 1], got {severity}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"image must be uint8 (C, H, W) or (H, W), got {image.dtype} {image.shape}"
        )
    h, w = image.shape[-2:]
    delta = DEFECTS[cls_name](h, w, float(severity), rng, scale_for(h, w, defect_px))
    if region is not None:
        delta = delta * np.asarray(region, dtype=np.float64)
    return apply_delta(image, delta)
