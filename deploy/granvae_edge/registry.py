"""A defensive REST client for an MLflow tracking server (urllib only).

The server is trusted to be an MLflow server, but a proxy, a misconfigured URL or a broken
deployment can answer anything: an HTML login page, a list, a truncated body, a 600 MB file.
Every such answer becomes one ``PullError`` naming the URL and what was wrong, never a Python
traceback, and nothing is ever held whole in memory: files stream to disk in chunks with a
running sha256, a byte count checked against Content-Length, and a total size budget.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
MAX_JSON_BYTES = 4 * 1024 * 1024  # a registry answer is a few KB; anything near this is wrong


class PullError(RuntimeError):
    """The model could not be resolved, downloaded or verified."""


class Budget:
    """Bytes the whole download may still take (``--max-bytes``)."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise PullError(f"--max-bytes must be positive, got {limit}")
        self.limit = limit
        self.used = 0

    @property
    def left(self) -> int:
        return self.limit - self.used

    def take(self, n: int, url: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise PullError(f"{url}: download exceeds the {self.limit}-byte limit (--max-bytes)")


def field(data: Any, url: str, *keys: str) -> Any:
    """``data[k1][k2]...`` or a PullError naming the missing path and the URL."""
    value = data
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            path = ".".join(keys[: depth + 1])
            raise PullError(f"{url}: malformed registry response: no '{path}' in the answer")
        value = value[key]
    return value


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read(MAX_JSON_BYTES).decode("utf-8"))
        return str(body.get("message", body)) if isinstance(body, dict) else str(body)[:200]
    except Exception:
        return exc.reason or "error"


def parse_json(raw: bytes, url: str) -> dict[str, Any]:
    """A registry body -> a JSON object, or one clear PullError."""
    if len(raw) > MAX_JSON_BYTES:
        raise PullError(f"{url}: registry answer larger than {MAX_JSON_BYTES} bytes")
    text = raw.decode("utf-8", errors="replace")
    if text.lstrip()[:1] == "<":
        raise PullError(f"{url}: the server answered an HTML page, not MLflow JSON (wrong URL?)")
    try:
        data = json.loads(text)
    except RecursionError:
        raise PullError(f"{url}: registry answer is nested too deeply") from None
    except ValueError as exc:
        raise PullError(f"{url}: registry answer is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PullError(f"{url}: registry answer is a {type(data).__name__}, not a JSON object")
    return data


class RestClient:
    """GETs against one tracking server, with retries on connection-level failures."""

    def __init__(
        self,
        tracking_uri: str,
        retries: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 30,
        authorization: str | None = None,
    ) -> None:
        self.base = tracking_uri.rstrip("/")
        self.authorization = authorization  # auth.authorization_header(); never redirected
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s

    def url(self, path: str, params: dict[str, str] | None = None) -> str:
        return self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")

    def _request(self, url: str) -> urllib.request.Request:
        req = urllib.request.Request(url)
        if self.authorization:  # unredirected: a redirect never carries the credential away
            req.add_unredirected_header("Authorization", self.authorization)
        return req

    def _open(self, url: str):
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return urllib.request.urlopen(self._request(url), timeout=self.timeout_s)
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code != 429:
                    raise PullError(f"{url}: HTTP {exc.code}: {_error_message(exc)}") from None
                last = exc
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                last = exc
            except ValueError as exc:  # http.client: bad status line, header parse errors
                raise PullError(f"{url}: not an HTTP answer ({exc})") from None
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise PullError(f"cannot reach {url} after {self.retries + 1} attempts: {last}")

    def get_json(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        url = self.url(path, params)
        try:
            with self._open(url) as resp:
                raw = resp.read(MAX_JSON_BYTES + 1)
        except PullError:
            raise
        except Exception as exc:  # reset mid-body, IncompleteRead, ...
            why = f"{type(exc).__name__}: {exc}"
            raise PullError(f"{url}: reading the answer failed: {why}") from None
        return parse_json(raw, url)

    def download(self, path: str, dest: Path, budget: Budget) -> str:
        """Stream ``path`` to ``dest``; returns the sha256. Refuses short or oversized bodies."""
        url = self.url(path)
        digest = hashlib.sha256()
        got = 0
        with self._open(url) as resp:
            expected = _content_length(resp, url)
            if expected is not None and expected > budget.left:
                raise PullError(
                    f"{url}: {expected} bytes would exceed the {budget.limit}-byte limit "
                    "(--max-bytes)"
                )
            try:
                with open(dest, "wb") as fh:
                    while chunk := _read_chunk(resp, url, got):
                        budget.take(len(chunk), url)
                        digest.update(chunk)
                        fh.write(chunk)
                        got += len(chunk)
            except OSError as exc:  # disk full, quota (on write or on the final flush)
                raise PullError(f"cannot write {dest}: {exc.strerror or exc}") from None
        if expected is not None and got != expected:
            raise PullError(f"{url}: download truncated: got {got} of {expected} bytes")
        return digest.hexdigest()


def _read_chunk(resp: Any, url: str, got: int) -> bytes:
    try:
        return resp.read(CHUNK)
    except Exception as exc:  # connection reset, IncompleteRead, timeout mid-body
        raise PullError(f"{url}: download truncated after {got} bytes ({exc})") from None


def _content_length(resp: Any, url: str) -> int | None:
    raw = resp.headers.get("Content-Length")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise PullError(f"{url}: invalid Content-Length {raw!r}") from None
    if value < 0:
        raise PullError(f"{url}: invalid Content-Length {raw!r}")
    return value
