"""Procedural sprites equivalent to dSprites, rendered from factors without a download.

dSprites is the standard benchmark for disentanglement metrics; rendering it ourselves keeps
tests offline and lets them shrink the image to 32x32. Factors (all indices):

    shape        3   square, ellipse, heart
    scale        6   0.5 .. 1.0 (linear, as in dSprites)
    orientation 40   0 .. 2*pi, endpoint excluded (dSprites repeats 0 at 2*pi; we do not, so
                     every orientation index is a distinct pose)
    pos_x       32   left .. right, sprite kept fully inside the frame
    pos_y       32   top .. bottom

dSprites' constant colour factor (size 1) is omitted: a factor that never varies carries no
information and only inflates F for the metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from granvae.data.base import check_factors, sample_uniform_factors

SHAPE_NAMES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
N_POSITIONS = 32
# Sprite radius at scale 1, as a fraction of the image side (~11 px at 64, like dSprites).
MAX_RADIUS = 0.17
CHUNK = 256  # images rendered per vectorised pass; bounds memory at (CHUNK, H, W) floats


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.72


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u / 1.0) ** 2 + (v / 0.5) ** 2 <= 1.0


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Classic implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, spanning about
    # x in [-1.14, 1.14], y in [-1, 1.25]; rescaled and recentred into the unit disc.
    # Image rows grow downwards, so v is negated to keep the heart upright at orientation 0.
    x = u * 1.2
    y = -v * 1.2 + 0.12
    return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0


SHAPE_TESTS: dict[int, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    0: _square,
    1: _ellipse,
    2: _heart,
}


class Shapes:
    """dSprites-like FactorDataset; images are binary (0/255), one channel."""

    factor_names: tuple[str, ...] = ("shape", "scale", "orientation", "pos_x", "pos_y")

    def __init__(self, image_size: int = 64) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16 for recognisable sprites, got {image_size}")
        self.image_size = int(image_size)

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return (len(SHAPE_NAMES), len(SCALES), len(ORIENTATIONS), N_POSITIONS, N_POSITIONS)

    @property
    def observation_shape(self) -> tuple[int, int, int]:
        return (1, self.image_size, self.image_size)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return sample_uniform_factors(self.factor_sizes, n, rng)

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Rendering is deterministic; `rng` is accepted only to honour FactorDataset."""
        return self.render(factors)

    def render(self, factors: np.ndarray) -> np.ndarray:
        """uint8 (n, 1, S, S) sprites, 255 inside the shape and 0 outside."""
        factors = check_factors(factors, self.factor_sizes)
        size = self.image_size
        out = np.zeros((len(factors), 1, size, size), np.uint8)
        for start in range(0, len(factors), CHUNK):
            chunk = factors[start : start + CHUNK]
            out[start : start + CHUNK, 0] = self._render_chunk(chunk) * np.uint8(255)
        return out

    def centres(self, pos_x: np.ndarray, pos_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates of sprite centres; the margin keeps the largest sprite in frame."""
        size = self.image_size
        margin = 1.05 * MAX_RADIUS * size
        step = (size - 2.0 * margin) / (N_POSITIONS - 1)
        return margin + pos_x * step, margin + pos_y * step

    def _render_chunk(self, factors: np.ndarray) -> np.ndarray:
        size = self.image_size
        grid = np.arange(size, dtype=np.float64) + 0.5
        xs = grid[None, None, :]
        ys = grid[None, :, None]
        cx, cy = self.centres(factors[:, 3].astype(np.float64), factors[:, 4].astype(np.float64))
        radius = SCALES[factors[:, 1]] * MAX_RADIUS * size
        theta = ORIENTATIONS[factors[:, 2]]
        cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        dx = (xs - cx[:, None, None]) / radius[:, None, None]
        dy = (ys - cy[:, None, None]) / radius[:, None, None]
        u = dx * cos + dy * sin
        v = -dx * sin + dy * cos
        inside = np.zeros((len(factors), size, size), dtype=bool)
        for shape_index, test in SHAPE_TESTS.items():
            rows = factors[:, 0] == shape_index
            if rows.any():
                inside[rows] = test(u[rows], v[rows])
        return inside.astype(np.uint8)
