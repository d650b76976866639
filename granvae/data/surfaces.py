"""Synthetic factory-inspection images: a machined plate with brushed texture, plus defects.

The nuisance factors are what a production line varies without anything being wrong
(tool direction, feed rate, lighting, fixture position); a useful model must tolerate them
yet notice defects. They are discretised so the clean images form a FactorDataset:

    orientation  8   brushing direction, 0 .. pi (endpoint excluded)
    frequency    4   machining marks per image side
    brightness   4   mean gray level of the part (lighting)
    offset_x     3   part shift, -1/0/+1 * image_size/16 pixels
    offset_y     3

Per-image randomness (fine sensor noise, brushing streaks) comes from the rng argument, so
two images with equal factors differ only in noise. Defect rendering lives in
granvae.data.defects.
"""

from __future__ import annotations

import numpy as np

from granvae.data.base import check_factors, sample_uniform_factors
from granvae.data.defects import render_defect

__all__ = ["CLASS_NAMES", "Surfaces", "render_defect"]

CLASS_NAMES = ("good", "blob", "scratch", "crack")
ORIENTATIONS = np.linspace(0.0, np.pi, 8, endpoint=False)
FREQUENCIES = (3.0, 5.0, 7.0, 10.0)
BRIGHTNESS = (80.0, 110.0, 140.0, 170.0)
OFFSETS = (-1.0, 0.0, 1.0)

BACKGROUND = 25.0  # gray level of the fixture behind the part
TEXTURE_AMPLITUDE = 12.0  # machining marks, gray levels peak
STREAK_AMPLITUDE = 6.0  # irregular brushing streaks
NOISE_SIGMA = 3.0  # sensor noise
PART_HALF_WIDTH = 0.40  # fraction of the image side
CORNER_RADIUS = 0.10


class Surfaces:
    """FactorDataset of clean (good) machined-part images, grayscale uint8."""

    factor_names: tuple[str, ...] = (
        "orientation",
        "frequency",
        "brightness",
        "offset_x",
        "offset_y",
    )

    def __init__(self, image_size: int = 64) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.image_size = int(image_size)

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return (len(ORIENTATIONS), len(FREQUENCIES), len(BRIGHTNESS), len(OFFSETS), len(OFFSETS))

    @property
    def observation_shape(self) -> tuple[int, int, int]:
        return (1, self.image_size, self.image_size)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return sample_uniform_factors(self.factor_sizes, n, rng)

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """uint8 (n, 1, S, S); noise is drawn from rng in row order, so output is reproducible."""
        factors = check_factors(factors, self.factor_sizes)
        out = np.empty((len(factors), 1, self.image_size, self.image_size), np.uint8)
        for i, row in enumerate(factors):
            out[i, 0] = self._render_one(row, rng)
        return out

    def part_region(self, factors: np.ndarray) -> np.ndarray:
        """(n, S, S) in [0, 1]: where the part is, for confining defects to it."""
        factors = check_factors(factors, self.factor_sizes)
        return np.stack([_plate(*self._offsets(row), self.image_size) for row in factors])

    def _offsets(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates relative to the part centre, (1, S) and (S, 1)."""
        size = self.image_size
        shift = size / 16.0
        grid = np.arange(size, dtype=np.float64) + 0.5
        dx = grid[None, :] - (size / 2.0 + OFFSETS[row[3]] * shift)
        dy = grid[:, None] - (size / 2.0 + OFFSETS[row[4]] * shift)
        return dx, dy

    def _render_one(self, row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = self.image_size
        theta = ORIENTATIONS[row[0]]
        dx, dy = self._offsets(row)
        # Marks run along (cos, sin); intensity varies across them, with the part (not the
        # camera) as reference so the texture moves with the part.
        across = -dx * np.sin(theta) + dy * np.cos(theta)
        marks = np.sin(2.0 * np.pi * FREQUENCIES[row[1]] * across / size)
        streaks = _streaks(across, size, rng)
        part = _plate(dx, dy, size)
        surface = BRIGHTNESS[row[2]] + TEXTURE_AMPLITUDE * marks + STREAK_AMPLITUDE * streaks
        image = BACKGROUND * (1.0 - part) + surface * part
        image += rng.normal(0.0, NOISE_SIGMA, size=image.shape)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _streaks(across: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random 1-D profile across the brushing direction (unit variance-ish)."""
    n_knots = 2 * size
    knots = rng.normal(0.0, 1.0, size=n_knots)
    kernel = np.array([0.25, 0.5, 0.25])
    knots = np.convolve(knots, kernel, mode="same") / np.sqrt((kernel**2).sum())
    positions = np.linspace(-size, size, n_knots)
    return np.interp(across, positions, knots)


def _plate(dx: np.ndarray, dy: np.ndarray, size: int) -> np.ndarray:
    """Soft-edged rounded square in [0, 1]: 1 on the part, 0 on the fixture."""
    half = PART_HALF_WIDTH * size
    corner = CORNER_RADIUS * size
    qx = np.abs(dx) - (half - corner)
    qy = np.abs(dy) - (half - corner)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    signed = outside + inside - corner  # signed distance to the rounded edge, <0 inside
    return np.clip(0.5 - signed, 0.0, 1.0)
