"""Write in-memory splits as an MVTec-AD style folder (the inverse of load_mvtec).

Useful to feed generated data through the same landing-folder path real line images take
(validation, loading, DVC), and to build small real folders in tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from granvae.data.base import GOOD, DatasetMeta, Split

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def _to_pil(image_chw: np.ndarray) -> Image.Image:
    if image_chw.shape[0] == 1:
        return Image.fromarray(image_chw[0])
    return Image.fromarray(np.ascontiguousarray(image_chw.transpose(1, 2, 0)))


def write_mvtec(
    root: str | Path, splits: dict[str, Split], meta: DatasetMeta, suffix: str = ".png"
) -> Path:
    """train and val go to train/good; test images to test/<class>; defect masks (0/255) to
    ground_truth/<class>/<stem>_mask.png. Masks stay PNG whatever `suffix` is: lossy masks
    would invent defect pixels. JPEG images are written at quality 95."""
    if suffix not in FORMATS:
        raise ValueError(f"suffix must be one of {sorted(FORMATS)}, got {suffix!r}")
    root = Path(root)
    counters: dict[str, int] = {}
    sources = [("train", splits["train"]), ("train", splits["val"]), ("test", splits["test"])]
    for part, split in sources:
        for i in range(len(split)):
            cls = meta.class_names[int(split.labels[i])]
            folder = root / part / cls
            folder.mkdir(parents=True, exist_ok=True)
            key = f"{part}/{cls}"
            stem = f"{counters.get(key, 0):04d}"
            counters[key] = counters.get(key, 0) + 1
            _to_pil(split.images[i]).save(folder / f"{stem}{suffix}", FORMATS[suffix], quality=95)
            if cls != GOOD:
                gt = root / "ground_truth" / cls
                gt.mkdir(parents=True, exist_ok=True)
                mask = Image.fromarray(split.masks[i] * np.uint8(255))
                mask.save(gt / f"{stem}_mask.png", "PNG")
    return root
