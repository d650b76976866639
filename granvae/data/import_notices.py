"""What an import changed or cannot promise, said when it happens instead of at sweep time.

Why: a folder import used to resize an 80x64 part, turn a colour JPEG grey and carve 15 images
for the threshold's calibration without a word (issue 16); the user learned about the last one
only from the sweep's "too few good images" warning, minutes later. These are notices, not
errors: each may be what the user wants, so each says how to choose otherwise.
"""

from __future__ import annotations

import math
from typing import Any

from granvae.data.layout import FolderLayout

SHOWN = 3  # example names per notice


def _examples(names: tuple[str, ...] | list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def min_calibration_images(false_alarm_rate: float) -> int:
    """Fewest good images whose conformal rank k = ceil((1 - far)(n + 1)) is <= n."""
    return math.ceil(1.0 / false_alarm_rate - 1.0 - 1e-9)


def import_notices(layout: FolderLayout, manifest: dict[str, Any], channels: int,
                   val_fraction: float, false_alarm_rate: float = 0.01) -> list[str]:  # fmt: skip
    """One line per thing the user should know about this import, most consequential first."""
    notices = []
    n_val = int(manifest["splits"]["val"]["count"])
    n_good = n_val + int(manifest["splits"]["train"]["count"])
    need = min_calibration_images(false_alarm_rate)
    if n_val < need:
        notices.append(
            f"validation split: {n_val} good images ({val_fraction:.0%} of {n_good} in "
            f"train/good); a threshold at {false_alarm_rate:g} false alarms needs >= {need}, so "
            f"the largest validation score will be the threshold and the rate is not "
            f"guaranteed (add good images, or raise --val-fraction)"
        )
    source = manifest.get("source") or {}
    if source.get("resized"):
        h, w = source["working_size"]
        sizes = [f"{sw}x{sh}" for sh, sw in source["sizes"] if (sh, sw) != (h, w)]
        notices.append(
            f"resized {_examples(sizes)} (WxH) to {w}x{h} (bilinear): the model sees that "
            f"resolution, and so will the edge (choose it with --image-size or data.image_size; "
            f"without it, import keeps the most common size)"
        )
    if channels == 1 and layout.colour_files:
        notices.append(
            f"{len(layout.colour_files)} colour or palette image(s) converted to grey (ITU-R "
            f"601 luma): {_examples(layout.colour_files)} (--channels 3 keeps colour)"
        )
    return notices
