"""Pull a registered bundle from an MLflow tracking server through its REST API.

Why REST with urllib instead of the mlflow client: the mlflow package drags in hundreds of MB
(pandas, sqlalchemy, flask, ...) that a factory device has no use for, and the few calls needed
here are stable, documented endpoints of MLflow 3.x:

- GET /api/2.0/mlflow/registered-models/alias?name=&alias=        -> model_version
- GET /api/2.0/mlflow/model-versions/get?name=&version=           -> model_version
- GET /api/2.0/mlflow/model-versions/get-download-uri?name=&version= -> artifact_uri
- GET /api/2.0/mlflow-artifacts/artifacts?path=<rel>               -> {"files": [...]}
- GET /api/2.0/mlflow-artifacts/artifacts/<rel>/<file>             -> file bytes

A version whose source the proxy does not serve (``file://`` on the server's disk, as on the
embedded sqlite store behind `granvae ui`; ``s3://`` without the proxy) is read *through the
server* instead, with the endpoints its UI uses; the device never opens a path a server names:

- GET /api/2.0/mlflow/artifacts/list?run_id=&path=<rel>          -> {"root_uri", "files"}
- GET /get-artifact?run_id=&path=<rel>/<file>                     -> file bytes

The download lands in a temp folder beside ``--out``, is verified as a bundle (schema, hash,
session), and only then moved into place, so a half-downloaded or tampered model never sits
where a server would load it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .auth import authorization_header, mlflow_credentials
from .bundle import BundleError, load_bundle
from .manifest import MANIFEST_FILE
from .registry import Budget, PullError, RestClient, field
from .signature import SignatureError, TrustStore

try:  # POSIX: a pull holds an flock on its temp folder; a stale one is safe to remove
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
RUN_LIST_API = f"{API}/artifacts/list"
RUN_FILE_API = "/get-artifact"
DEFAULT_MAX_BYTES = 2 * 1024**3
MAX_DEPTH = 4  # a bundle is flat; MLflow adds one level at most
MAX_FILES = 256

__all__ = ["PullError", "RestClient", "fetch_artifacts", "parse_model_uri", "pull"]


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


def resolve_version(client: RestClient, ref: ModelRef) -> str:
    """Alias -> version number (a version is returned as is after checking it exists)."""
    if ref.alias is not None:
        path, params = f"{API}/registered-models/alias", {"name": ref.name, "alias": ref.alias}
    else:
        path, params = f"{API}/model-versions/get", {"name": ref.name, "version": str(ref.version)}
    version = field(client.get_json(path, params), client.url(path, params), "model_version",
                    "version")  # fmt: skip
    if not isinstance(version, str | int) or not str(version).isdigit():
        raise PullError(f"{client.url(path, params)}: version {version!r} is not a number")
    return str(version)


def download_uri(client: RestClient, name: str, version: str) -> str:
    path, params = f"{API}/model-versions/get-download-uri", {"name": name, "version": version}
    uri = field(client.get_json(path, params), client.url(path, params), "artifact_uri")
    if not isinstance(uri, str) or not uri or "\0" in uri:
        raise PullError(f"{client.url(path, params)}: artifact_uri {uri!r} is not a URI")
    return uri


def _safe_name(name: Any) -> str:
    # A listing entry is a base name; anything else could write outside the download folder.
    if (
        not isinstance(name, str) or not name or name in (".", "..") or "/" in name
        or "\\" in name or any(ord(c) < 32 for c in name)
    ):  # fmt: skip
        raise PullError(f"refusing artifact entry {name!r}: not a plain file name")
    return name


def _listing(
    client: RestClient, api: str, params: dict[str, str], rel: str
) -> list[dict[str, Any]]:
    url = client.url(api, params)
    files = client.get_json(api, params).get("files", [])
    if not isinstance(files, list) or not all(isinstance(e, dict) for e in files):
        raise PullError(f"{url}: malformed listing: 'files' is not a list of objects")
    if not files:
        raise PullError(f"artifact folder {rel!r} on {client.base} is empty or missing")
    if len(files) > MAX_FILES:
        raise PullError(f"{url}: {len(files)} entries; a bundle has a handful")
    # The manifest first: it names the model file and its sha256, checked while streaming.
    return sorted(files, key=lambda e: str(e.get("path", "")).rsplit("/", 1)[-1] != MANIFEST_FILE)


@dataclass
class _Fetch:
    client: RestClient
    budget: Budget
    expected: dict[str, str]  # file name -> sha256 the manifest promises (top level only)
    run_id: str | None = None  # set: the server's run-artifact endpoints, else its proxy

    def listing(self, rel: str) -> list[dict[str, Any]]:
        if self.run_id is None:
            return _listing(self.client, ARTIFACTS_API, {"path": rel}, rel)
        return _listing(self.client, RUN_LIST_API, {"run_id": self.run_id, "path": rel}, rel)

    def file_path(self, rel: str) -> str:
        if self.run_id is None:
            return f"{ARTIFACTS_API}/{urllib.parse.quote(rel, safe='/')}"
        return RUN_FILE_API + "?" + urllib.parse.urlencode({"run_id": self.run_id, "path": rel})


def _expect_from_manifest(path: Path) -> dict[str, str]:
    """Every file the manifest lists (``files``) and the model, by sha256; checked as they stream.

    Early refusal only: the signature and every hash are checked again by load_bundle.
    """
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest.get("files")
        files = files if isinstance(files, dict) else {}
        expected = {str(k): str(v).lower() for k, v in files.items()}
        expected[str(manifest["model_file"])] = str(manifest["model_sha256"]).lower()
        return expected
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}  # load_bundle reports the manifest's problem precisely afterwards


def fetch_proxied(fetch: _Fetch, rel: str, dest: Path, depth: int = 0) -> None:
    """Mirror the artifact folder ``rel`` (relative to the server's artifact root) into dest."""
    if depth > MAX_DEPTH:
        raise PullError(f"artifact folder {rel!r} is nested deeper than {MAX_DEPTH} levels")
    for entry in fetch.listing(rel):
        name = _safe_name(str(entry.get("path", "")).rsplit("/", 1)[-1])
        child = f"{rel}/{name}" if rel else name
        if entry.get("is_dir"):
            (dest / name).mkdir()
            fetch_proxied(fetch, child, dest / name, depth + 1)
            continue
        digest = fetch.client.download(fetch.file_path(child), dest / name, fetch.budget)
        if depth == 0 and name == MANIFEST_FILE:
            fetch.expected = _expect_from_manifest(dest / name)
        want = fetch.expected.get(name) if depth == 0 else None
        if want is not None and digest != want:
            raise PullError(
                f"sha256 mismatch for {child}: downloaded {digest}, manifest says {want}"
            )


def _copy_local(src: Path, dest: Path, budget: Budget) -> None:
    files = [p for p in src.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    if total > budget.limit:
        raise PullError(f"{src} holds {total} bytes, over the {budget.limit}-byte limit")
    shutil.copytree(src, dest, dirs_exist_ok=True)


def fetch_artifacts(
    client: RestClient,
    artifact_uri: str,
    dest: Path,
    allow_local: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    run_id: str | None = None,
) -> None:
    """Copy the version's artifacts into ``dest`` (an existing, empty folder).

    Only the tracking server is read by default: its artifact proxy, or, given the version's
    ``run_id``, its run-artifact endpoints for a source the proxy does not serve. A ``file://``
    URI is never opened on the device unless ``allow_local``: a server answer would otherwise
    make the device copy any local folder it names into its bundle.
    """
    budget = Budget(max_bytes)
    parsed = urllib.parse.urlparse(artifact_uri)
    if parsed.scheme == "mlflow-artifacts":
        # mlflow-artifacts:/<rel> or mlflow-artifacts://host:port/<rel>: always via our server.
        rel = urllib.parse.unquote(parsed.path).strip("/")
        fetch_proxied(_Fetch(client, budget, {}), rel, dest)
        return
    local = parsed.scheme in ("file", "")
    if run_id is not None and not (local and allow_local):
        rel = run_relative(client, run_id, artifact_uri)
        fetch_proxied(_Fetch(client, budget, {}, run_id), rel, dest)
        return
    if local:
        if not allow_local:
            raise PullError(
                f"artifact URI {artifact_uri!r} is a local path; refusing it (a server must "
                "serve artifacts through its proxy: --artifacts-destination); pass "
                "--allow-local-artifacts to copy local folders"
            )
        src = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else artifact_uri)
        if not src.is_dir():
            raise PullError(f"artifact folder {src} (from {artifact_uri}) does not exist here")
        _copy_local(src, dest, budget)
        return
    raise PullError(
        f"artifact URI {artifact_uri!r} uses scheme {parsed.scheme!r}; the edge runtime reads "
        "only mlflow-artifacts:/ (run the server with --artifacts-destination)"
    )


def run_relative(client: RestClient, run_id: str, artifact_uri: str) -> str:
    """The version's folder relative to its run's artifact root, as the server reports it."""
    url = client.url(RUN_LIST_API, {"run_id": run_id})
    root = client.get_json(RUN_LIST_API, {"run_id": run_id}).get("root_uri")
    if not isinstance(root, str) or not root:
        raise PullError(f"{url}: no 'root_uri': the server cannot list the run's artifacts")
    root = root.rstrip("/")
    if not artifact_uri.startswith(root + "/"):
        raise PullError(
            f"artifact URI {artifact_uri!r} is not under its run's artifacts ({root}); "
            "refusing it (serve artifacts through the server's proxy: --artifacts-destination)"
        )
    return artifact_uri[len(root) + 1 :].strip("/")


def version_run_id(client: RestClient, name: str, version: str) -> str:
    """The run that logged the version: its artifacts are read through the server."""
    path, params = f"{API}/model-versions/get", {"name": name, "version": version}
    run_id = field(client.get_json(path, params), client.url(path, params), "model_version",
                   "run_id")  # fmt: skip
    if not isinstance(run_id, str) or not run_id or not run_id.isalnum():
        raise PullError(f"{client.url(path, params)}: run_id {run_id!r} is not a run id")
    return run_id


def check_out_folder(out: Path) -> None:
    """``--out`` may be new, empty, or a bundle folder; anything else is the user's data."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise PullError(f"--out {out} exists and is not a folder; refusing to replace it")
    entries = sorted(p.name for p in out.iterdir())
    if entries and MANIFEST_FILE not in entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise PullError(
            f"--out {out} holds {len(entries)} entries that are not a bundle ({shown}); "
            "refusing to replace it: pull into a new or empty folder, or a bundle folder"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _locked_by_other(folder: Path) -> bool:
    """True if a live pull holds the folder's flock (released by the kernel when it dies)."""
    if fcntl is None:
        return True
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops our lock too
    return False


def clean_stale(out: Path) -> list[Path]:
    """Remove what a killed pull left beside ``out``; restore a bundle a crash moved aside."""
    removed: list[Path] = []
    for tmp in out.parent.glob(f".{out.name}.pull-*"):
        if tmp.is_dir() and not _locked_by_other(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        pid = old.name.rsplit(".old-", 1)[-1].split("-", 1)[0]
        if not old.is_dir() or (pid.isdigit() and _pid_alive(int(pid))):
            continue
        if not out.exists():
            os.replace(old, out)  # killed between the two renames: the old bundle comes back
        else:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


@contextlib.contextmanager
def _pull_folder(out: Path) -> Iterator[Path]:
    """A locked temp folder beside ``out``, removed unless it was installed."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.pull-", dir=out.parent))
    fd = os.open(tmp, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
    finally:
        os.close(fd)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, out: Path) -> None:
    """Move the verified folder to ``out``; an existing bundle is swapped out, then removed.

    Each rename is atomic; between the two a reload would find no bundle and refuse it, which
    keeps the old model serving (server.py verifies before it swaps).
    """
    check_out_folder(out)  # again: the folder may have changed during the download
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
    model_uri: str,
    out: str | Path,
    tracking_uri: str | None = None,
    retries: int = 4,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_local: bool = False,
    trust: TrustStore | None = None,
    credentials: str | Path | None = None,
) -> dict[str, Any]:
    """Resolve, download, verify (signature and every file), install; returns provenance.

    ``trust`` None: $GRANVAE_EDGE_TRUSTED_KEYS (load_bundle); ``credentials``: auth.py.
    """
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        raise PullError(
            "an http(s) tracking URI is needed: --tracking-uri URL or MLFLOW_TRACKING_URI (the "
            "server holding the registry, e.g. http://127.0.0.1:5000 where `granvae ui` listens)"
        )
    ref = parse_model_uri(model_uri)
    out = Path(out).absolute()
    check_out_folder(out)  # refuse before any download, not after
    auth = authorization_header(mlflow_credentials(credentials))
    client = RestClient(tracking_uri, retries=retries, authorization=auth)
    version = resolve_version(client, ref)
    artifact_uri = download_uri(client, ref.name, version)
    run_id = None
    scheme = urllib.parse.urlparse(artifact_uri).scheme
    if scheme != "mlflow-artifacts" and not (allow_local and scheme in ("file", "")):
        run_id = version_run_id(client, ref.name, version)  # read through the server, not here
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    with _pull_folder(out) as tmp:
        fetch_artifacts(
            client, artifact_uri, tmp, allow_local=allow_local, max_bytes=max_bytes, run_id=run_id
        )
        try:  # full verification before anything replaces the current one
            bundle = load_bundle(tmp, trust=trust)
        except (BundleError, SignatureError) as exc:
            raise PullError(f"downloaded bundle refused: {exc}") from None
        _install(tmp, out)
    return {
        "model_uri": model_uri,
        "name": ref.name,
        "version": version,
        "artifact_uri": artifact_uri,
        "out": str(out),
        "revision": bundle.revision,
        "model_sha256": bundle.model_sha256,
        "signed_by": bundle.signed_by,
    }
