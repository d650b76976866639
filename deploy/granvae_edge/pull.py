"""Pull a registered bundle from an MLflow tracking server through its REST API.

Why REST with urllib instead of the mlflow client: the mlflow package drags in hundreds of MB
(pandas, sqlalchemy, flask, ...) that a factory device has no use for, and the few calls needed
here are stable, documented endpoints of MLflow 3.x:

- GET /api/2.0/mlflow/registered-models/alias?name=&alias=        -> model_version
- GET /api/2.0/mlflow/model-versions/get?name=&version=           -> model_version
- GET /api/2.0/mlflow/model-versions/get-download-uri?name=&version= -> artifact_uri
- GET /api/2.0/mlflow-artifacts/artifacts?path=<rel>               -> {"files": [...]}
- GET /api/2.0/mlflow-artifacts/artifacts/<rel>/<file>             -> file bytes

The download lands in a temp folder beside ``--out``, is verified as a bundle (schema, hash,
session), and only then moved into place, so a half-downloaded or tampered model never sits
where a server would load it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bundle import load_bundle

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
CHUNK = 1 << 20


class PullError(RuntimeError):
    """The model could not be resolved, downloaded or verified."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    alias: str | None = None
    version: str | None = None


def parse_model_uri(uri: str) -> ModelRef:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    if not uri.startswith("models:/"):
        raise PullError(f"model URI {uri!r} must look like models:/NAME@ALIAS or models:/NAME/N")
    rest = uri[len("models:/") :].strip("/")
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        if name and alias:
            return ModelRef(name=name, alias=alias)
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and version.isdigit():
            return ModelRef(name=name, version=version)
    raise PullError(f"model URI {uri!r} must look like models:/NAME@ALIAS or models:/NAME/N")


class RestClient:
    """GETs against one tracking server, with retries on connection-level failures."""

    def __init__(
        self, tracking_uri: str, retries: int = 4, backoff_s: float = 0.5, timeout_s: float = 30
    ) -> None:
        self.base = tracking_uri.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s

    def _open(self, path: str, params: dict[str, str] | None = None):
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return urllib.request.urlopen(url, timeout=self.timeout_s)
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code != 429:
                    raise PullError(f"{url}: HTTP {exc.code}: {_error_message(exc)}") from None
                last = exc
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                last = exc
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise PullError(f"cannot reach {url} after {self.retries + 1} attempts: {last}")

    def get_json(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        with self._open(path, params) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def download(self, path: str, dest: Path) -> None:
        with self._open(path) as resp, open(dest, "wb") as fh:
            shutil.copyfileobj(resp, fh, CHUNK)


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read().decode("utf-8"))
        return str(body.get("message", body))
    except Exception:
        return exc.reason or "error"


def resolve_version(client: RestClient, ref: ModelRef) -> str:
    """Alias -> version number (a version is returned as is after checking it exists)."""
    if ref.alias is not None:
        params = {"name": ref.name, "alias": ref.alias}
        data = client.get_json(f"{API}/registered-models/alias", params)
    else:
        data = client.get_json(
            f"{API}/model-versions/get", {"name": ref.name, "version": str(ref.version)}
        )
    return str(data["model_version"]["version"])


def download_uri(client: RestClient, name: str, version: str) -> str:
    data = client.get_json(
        f"{API}/model-versions/get-download-uri", {"name": name, "version": version}
    )
    return str(data["artifact_uri"])


def _safe_name(name: str) -> str:
    # A listing entry is a base name; anything else could write outside the download folder.
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise PullError(f"refusing artifact entry {name!r}")
    return name


def fetch_proxied(client: RestClient, rel: str, dest: Path) -> None:
    """Mirror the artifact folder ``rel`` (relative to the server's artifact root) into dest."""
    listing = client.get_json(ARTIFACTS_API, {"path": rel})
    files = listing.get("files", [])
    if not files:
        raise PullError(f"artifact folder {rel!r} on {client.base} is empty or missing")
    for entry in files:
        name = _safe_name(str(entry["path"]).rsplit("/", 1)[-1])
        child = f"{rel}/{name}" if rel else name
        if entry.get("is_dir"):
            (dest / name).mkdir()
            fetch_proxied(client, child, dest / name)
        else:
            quoted = urllib.parse.quote(child, safe="/")
            client.download(f"{ARTIFACTS_API}/{quoted}", dest / name)


def fetch_artifacts(client: RestClient, artifact_uri: str, dest: Path) -> None:
    """Copy the version's artifacts into ``dest`` (an existing, empty folder)."""
    parsed = urllib.parse.urlparse(artifact_uri)
    if parsed.scheme == "mlflow-artifacts":
        # mlflow-artifacts:/<rel> or mlflow-artifacts://host:port/<rel>: always via our server.
        fetch_proxied(client, urllib.parse.unquote(parsed.path).strip("/"), dest)
        return
    if parsed.scheme in ("file", ""):
        src = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else artifact_uri)
        if not src.is_dir():
            raise PullError(f"artifact folder {src} (from {artifact_uri}) does not exist here")
        shutil.copytree(src, dest, dirs_exist_ok=True)
        return
    raise PullError(
        f"artifact URI {artifact_uri!r} uses scheme {parsed.scheme!r}; the edge runtime reads "
        "only mlflow-artifacts:/ (run the server with --artifacts-destination) or local paths"
    )


def _install(tmp: Path, out: Path) -> None:
    """Move the verified folder to ``out``; an existing bundle is swapped out, then removed.

    Each rename is atomic; between the two a reload would find no bundle and refuse it, which
    keeps the old model serving (server.py verifies before it swaps).
    """
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def pull(
    model_uri: str, out: str | Path, tracking_uri: str | None = None, retries: int = 4
) -> dict[str, Any]:
    """Resolve, download, verify, install. Returns provenance of the installed bundle."""
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        raise PullError("an http(s) tracking URI is needed: --tracking-uri or MLFLOW_TRACKING_URI")
    ref = parse_model_uri(model_uri)
    client = RestClient(tracking_uri, retries=retries)
    version = resolve_version(client, ref)
    artifact_uri = download_uri(client, ref.name, version)
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.pull-", dir=out.parent))
    try:
        fetch_artifacts(client, artifact_uri, tmp)
        bundle = load_bundle(tmp)  # full verification before anything replaces the current one
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "model_uri": model_uri,
        "name": ref.name,
        "version": version,
        "artifact_uri": artifact_uri,
        "out": str(out),
        "revision": bundle.revision,
        "model_sha256": bundle.model_sha256,
    }
