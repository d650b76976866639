"""Credentials of the edge runtime: the device API token, the reload rate gate, MLflow auth.

Why here and not in server.py/pull.py: the rules are small but easy to get subtly wrong (a
timing-leaking compare, a token file anyone can read, a password sent on to a redirect target),
so they live in one module with one job and the transport code only calls them.

- Device API: mutating routes (``/reload``) need ``Authorization: Bearer <token>``; the token is
  read from a file that must not be readable by group or others, and compared with
  ``hmac.compare_digest``. ``serve`` refuses a non-loopback address without a token.
- Reloads pass a rate gate (one per ``interval`` seconds); the rest get 429 at once, so a flood
  costs a header parse, not a model load.
- ``pull`` sends ``MLFLOW_TRACKING_TOKEN`` (Bearer) or ``MLFLOW_TRACKING_USERNAME`` +
  ``MLFLOW_TRACKING_PASSWORD`` (Basic), from the environment or a credentials file in the
  ``KEY=VALUE`` form ``granvae stack env --role device`` prints.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import os
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path

MIN_TOKEN_CHARS = 16
TOKEN_ENV = "GRANVAE_EDGE_TOKEN_FILE"
CREDENTIALS_ENV = "GRANVAE_EDGE_CREDENTIALS"
CREDENTIAL_KEYS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


class AuthError(ValueError):
    """A credential file is missing, too open, or malformed; or a bind needs a token."""


def _read_secret_file(path: Path, what: str) -> str:
    """The file's text, refused when group/others may read it (like ssh does with keys)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuthError(
            f"{what} {path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    return text


def load_token(path: str | Path | None) -> str | None:
    """The device API token from ``path`` (or $GRANVAE_EDGE_TOKEN_FILE); None if neither."""
    path = path or os.environ.get(TOKEN_ENV)
    if not path:
        return None
    token = _read_secret_file(Path(path), "token file").strip()
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise AuthError(
            f"token file {path} must hold one token of at least {MIN_TOKEN_CHARS} characters "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or "" (every interface): not provably local


def require_token_for(host: str, token: str | None) -> None:
    """Anyone on the plant network could reload a server bound beyond loopback: need a token."""
    if token is None and not is_loopback(host):
        raise AuthError(
            f"refusing to listen on {host!r} without a token: pass --token-file (mode 600) or "
            "bind 127.0.0.1"
        )


def bearer_problem(header: str | None, token: str | None) -> str | None:
    """Why the Authorization header does not carry ``token``; None when it does (or no token)."""
    if token is None:
        return None
    if not header:
        return "this route needs 'Authorization: Bearer <token>'"
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return "this route needs 'Authorization: Bearer <token>'"
    if not hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8")):
        return "invalid token"
    return None


class RateGate:
    """At most one pass per ``interval_s``; ``try_pass`` returns 0 or the seconds to wait."""

    def __init__(self, interval_s: float) -> None:
        if interval_s < 0:
            raise ValueError(f"reload interval must be >= 0 s, got {interval_s}")
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last = -float("inf")

    def try_pass(self) -> float:
        with self._lock:
            now = time.monotonic()
            wait = self._last + self.interval_s - now
            if wait > 0:
                return wait
            self._last = now
            return 0.0


def _parse_env_file(text: str, path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            raise AuthError(f"credentials file {path} line {number}: expected KEY=VALUE")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def mlflow_credentials(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The MLflow credential variables: the file (``path`` or $GRANVAE_EDGE_CREDENTIALS) wins."""
    env = os.environ if env is None else env
    source = path or env.get(CREDENTIALS_ENV)
    values = dict(env)
    if source:
        values = _parse_env_file(_read_secret_file(Path(source), "credentials file"), Path(source))
    return {k: values[k] for k in CREDENTIAL_KEYS if values.get(k)}


def authorization_header(credentials: Mapping[str, str]) -> str | None:
    """Bearer for a token, Basic for user + password, None for an anonymous client."""
    if credentials.get("MLFLOW_TRACKING_TOKEN"):
        return f"Bearer {credentials['MLFLOW_TRACKING_TOKEN']}"
    user = credentials.get("MLFLOW_TRACKING_USERNAME")
    password = credentials.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return f"Basic {pair}"
    if user or password:
        raise AuthError("MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD go together")
    return None
