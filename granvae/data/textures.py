"""Real photographs for the peer benchmark: texture scans that ship inside scikit-image.

Generated parts flatter any detector that knows how they were drawn. These three 512x512
grey photographs (``skimage.data.brick``, ``grass``, ``gravel``) are real scans nobody here
made, so they test whether a model learns a texture or averages it away.

How a data set is cut, so that no test pixel was ever seen in training, yet train and test
see the same parts of the photograph (its lighting drifts from top to bottom, and a test
set cut from one end would flag good crops for the drift, not for defects):
- the photograph is cut into 8 horizontal bands of 64 rows, dealt in turn to train, val
  and test (train 0, 3, 6; val 1, 4, 7; test 2, 5), so each split spans the photograph;
- crops are ``image_size`` squares at uniform random positions inside a random band of
  their split. Val shares no pixel with train either: a memory-bank method would
  otherwise find its val crops in its own bank and calibrate a threshold far too low.

Defects (documented in docs/inspection.md), each with a pixel mask:
- ``foreign``: an elliptical patch of *another* texture pasted in (foreign material);
- ``scratch``: a thin straight line, 1-2 px, lighter or darker than its surroundings;
- ``smudge``: an elliptical region blurred (Gaussian, sigma 1.5-3 px) and dimmed or
  brightened by 10-25% (a stain, oil or a fingerprint).
Severity in (0, 1] grows size and contrast together, as in the generated defects.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from granvae.data.base import GOOD, DatasetMeta, Split, make_split
from granvae.data.generate import SEVERITY_RANGE, defect_counts

TEXTURES = ("brick", "grass", "gravel")
CLASS_NAMES = (GOOD, "foreign", "scratch", "smudge")
BAND = 64
TRAIN_BANDS = (0, 3, 6)
VAL_BANDS = (1, 4, 7)
TEST_BANDS = (2, 5)
FOREIGN_SOURCE = {"brick": "gravel", "grass": "brick", "gravel": "grass"}
MASK_MIN_DELTA = 6.0  # gray levels; below that a changed pixel is not called defective


def load_photo(name: str) -> np.ndarray:
    """The 512x512 uint8 photograph; scikit-image is imported only when asked for."""
    if name not in TEXTURES:
        raise ValueError(f"unknown texture {name!r}; valid: {', '.join(TEXTURES)}")
    from skimage import data as skdata

    return np.asarray(getattr(skdata, name)(), dtype=np.uint8)


def _crops(photo: np.ndarray, bands: tuple[int, ...], n: int, size: int, rng) -> np.ndarray:
    starts = np.asarray(bands)[rng.integers(0, len(bands), size=n)] * BAND
    ys = starts + rng.integers(0, BAND - size + 1, size=n)
    xs = rng.integers(0, photo.shape[1] - size + 1, size=n)
    return np.stack([photo[y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True)])


def _ellipse(size: int, severity: float, rng, radius: tuple[float, float]) -> np.ndarray:
    """Soft elliptical weight in [0, 1] at a random place, radius scaled by severity."""
    r = radius[0] + (radius[1] - radius[0]) * severity
    cy, cx = rng.uniform(r, size - r, size=2)
    ry, rx = r * rng.uniform(0.6, 1.0, size=2)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
    return np.clip((1.0 - np.sqrt(u**2 + v**2)) / 0.3, 0.0, 1.0)  # full inside 0.7 r


def _foreign(crop: np.ndarray, severity: float, rng, other: np.ndarray) -> np.ndarray:
    weight = _ellipse(crop.shape[0], severity, rng, (3.0, 9.0))
    patch = _crops(other, tuple(range(8)), 1, crop.shape[0], rng)[0].astype(np.float64)
    return weight * patch + (1.0 - weight) * crop


def _scratch(crop: np.ndarray, severity: float, rng, _other: np.ndarray) -> np.ndarray:
    size = crop.shape[0]
    length = 12 + 28 * severity
    cy, cx = rng.uniform(length / 2, size - length / 2, size=2)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    half_width = 0.5 + 0.5 * severity
    profile = np.clip(half_width + 0.5 - np.abs(across), 0.0, 1.0) * (np.abs(along) <= length / 2)
    sign = rng.choice([-1.0, 1.0])
    return crop + sign * (35.0 + 45.0 * severity) * profile


def _smudge(crop: np.ndarray, severity: float, rng, _other: np.ndarray) -> np.ndarray:
    weight = _ellipse(crop.shape[0], severity, rng, (5.0, 12.0))
    blurred = gaussian_filter(crop, sigma=1.5 + 1.5 * severity, mode="reflect")
    gain = 1.0 + rng.choice([-1.0, 1.0]) * (0.10 + 0.15 * severity)
    return weight * blurred * gain + (1.0 - weight) * crop


DEFECTS: dict[str, Callable[..., np.ndarray]] = {
    "foreign": _foreign,
    "scratch": _scratch,
    "smudge": _smudge,
}


def apply_texture_defect(
    crop: np.ndarray, kind: str, severity: float, rng, other: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(defective uint8 crop, mask); the mask marks pixels changed by >= MASK_MIN_DELTA."""
    base = crop.astype(np.float64)
    out = np.clip(DEFECTS[kind](base, severity, rng, other), 0, 255)
    image = np.round(out).astype(np.uint8)
    mask = (np.abs(image.astype(np.float64) - base) >= MASK_MIN_DELTA).astype(np.uint8)
    return image, mask


def make_texture(
    name: str,
    n_train: int = 1024,
    n_val: int = 256,
    n_test: int = 256,
    seed: int = 0,
    image_size: int = 64,
    defect_fraction: float = 0.5,
) -> tuple[dict[str, Split], DatasetMeta]:
    """Splits in the contract's shape, reproducible from ``seed``."""
    photo = load_photo(name)
    other = load_photo(FOREIGN_SOURCE[name])
    train_rng, val_rng, test_rng = (
        np.random.default_rng(s)
        for s in np.random.SeedSequence([seed, TEXTURES.index(name)]).spawn(3)
    )
    names = [f"{name}:{seed}:{i}" for i in range(n_train + n_val + n_test)]
    train = _crops(photo, TRAIN_BANDS, n_train, image_size, train_rng)
    val = _crops(photo, VAL_BANDS, n_val, image_size, val_rng)
    test = _crops(photo, TEST_BANDS, n_test, image_size, test_rng)
    n_def = int(round(n_test * defect_fraction))
    labels = np.concatenate(
        [np.zeros(n_test - n_def, np.int64)]
        + [np.full(c, k + 1, np.int64) for k, c in enumerate(defect_counts(n_def, 3))]
    )
    test_rng.shuffle(labels)
    masks = np.zeros((n_test, image_size, image_size), np.uint8)
    severity = np.zeros(n_test, np.float32)
    for i in np.flatnonzero(labels):
        severity[i] = test_rng.uniform(*SEVERITY_RANGE)
        test[i], masks[i] = apply_texture_defect(
            test[i], CLASS_NAMES[labels[i]], float(severity[i]), test_rng, other
        )
    splits = {
        "train": make_split(train[:, None], names=names[:n_train]),
        "val": make_split(val[:, None], names=names[n_train : n_train + n_val]),
        "test": make_split(test[:, None], labels, None, masks, severity, names[n_train + n_val :]),
    }
    meta = DatasetMeta(
        name=f"texture-{name}",
        kind="texture",
        observation_shape=(1, image_size, image_size),
        class_names=CLASS_NAMES,
        factor_names=(),
        factor_sizes=(),
        seed=int(seed),
    )
    return splits, meta
