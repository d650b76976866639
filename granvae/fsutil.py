"""Putting a finished folder into place atomically, for every store granvae writes.

Data sets and edge bundles are built in a hidden sibling folder and renamed into
place, so a reader never sees a half-written one and a crash leaves the old one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def swap_dir_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` is moved aside first (and put back if the
    rename fails), then removed. Both folders must sit on the same filesystem."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex}"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
