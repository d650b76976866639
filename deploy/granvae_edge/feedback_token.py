"""The bearer token that guards POST /feedback, until the edge has roles (issue 14).

Kept apart so that module can replace it: one file holds the token (first line, stripped),
and a request is authorised when its ``Authorization: Bearer <token>`` matches, compared in
constant time (hmac.compare_digest) so response timing leaks nothing about the token.
"""

from __future__ import annotations

import hmac
from pathlib import Path

MIN_LENGTH = 16


def load_token(path: str | Path) -> str:
    """The token in ``path``; ValueError naming the file if it is missing, empty or short."""
    try:
        token = Path(path).read_text().splitlines()[0].strip() if Path(path).stat().st_size else ""
    except OSError as exc:
        raise ValueError(f"cannot read feedback token file {path}: {exc.strerror}") from exc
    if len(token) < MIN_LENGTH:
        raise ValueError(f"feedback token in {path} must be at least {MIN_LENGTH} characters")
    return token


def authorised(header: str | None, token: str) -> bool:
    """True when ``header`` is exactly ``Bearer <token>``."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())
