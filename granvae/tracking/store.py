"""Where tracking goes, and the one door every server call goes through.

Embedded by default (sqlite + a local artifact folder in the project's working folder), any
`MLFLOW_TRACKING_URI` otherwise, with no code change. Every call that talks to the tracking
server runs through `Store.call`: a few attempts with a short exponential backoff on
*transient* failures (connection refused, timeouts, 5xx, a locked sqlite file), then
`TrackingUnavailable` naming the URI. Errors that retrying cannot fix (a missing model, a bad
parameter) pass through at once, because callers branch on them.

MLflow's own HTTP retry loop (7 retries, backoff factor 2: minutes against a dead server) is
turned down for the duration of our calls so the backoff here is the one that counts.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, Field

from granvae.project import project_root
from granvae.tracking.relocate import ARTIFACTS_DIR, experiment_folder, relocate_store

T = TypeVar("T")
DB_FILE = "mlflow.db"
_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}
_TRANSIENT_TEXT = (
    "max retries exceeded",
    "connection refused",
    "connection aborted",
    "connection reset",
    "remotedisconnected",
    "read timed out",
    "failed to establish a new connection",
    "database is locked",
    "error code 50",  # MLflow: "failed with error code 503 != 200" (a proxy, an overload)
    "error code 429",
    "service unavailable",
    "bad gateway",
)


class TrackingUnavailable(RuntimeError):
    """The tracking server could not be reached after retries; local files are untouched."""

    def __init__(self, uri: str, what: str, attempts: int, cause: BaseException) -> None:
        super().__init__(
            f"MLflow tracking server at {uri} is unavailable: {what} failed after {attempts} "
            f"attempt(s) ({type(cause).__name__}: {str(cause)[:300]}). Nothing local was "
            "removed; rerun the same command once the server is back (it resumes, no duplicates)."
        )
        self.uri = uri


class RegistrationRefused(RuntimeError):
    """Nothing to register (every candidate failed the gates) or its files are incomplete."""


class PromotionRefused(RuntimeError):
    """The version failed the gates, is worse than the champion, or is not complete."""


class TrackingSettings(BaseModel):
    """params.yaml `tracking:`; every field has an embedded, no-server default."""

    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite in `workdir`
    workdir: Path = Field(default_factory=project_root)  # the project, found walking up
    experiment: str = "granvae"
    model_name: str = "granvae-inspector"
    attempts: int = Field(4, ge=1)
    backoff_s: float = Field(0.5, ge=0)
    max_backoff_s: float = Field(4.0, ge=0)
    http_timeout_s: int = Field(30, ge=1)
    # Retrain candidates open their run when training starts and log each epoch (curves
    # while training, granvae.tracking.live); false: runs are logged once, at registration.
    live: bool = True


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def embedded_uri(workdir: Path | str) -> str:
    return f"sqlite:///{(Path(workdir) / DB_FILE).resolve()}"


def embedded_artifacts(workdir: Path | str) -> Path:
    return (Path(workdir) / ARTIFACTS_DIR).resolve()


def open_embedded(workdir: Path | str) -> str:
    """The embedded store's URI, its paths first pointed at `workdir` if the project was
    moved or copied since they were written (granvae.tracking.relocate). Every opener of
    the embedded store (Store, `granvae ui`) goes through here."""
    relocate_store(Path(workdir) / DB_FILE)
    return embedded_uri(workdir)


def resolve_uri(settings: TrackingSettings) -> str:
    """Explicit setting > $MLFLOW_TRACKING_URI > the embedded sqlite store."""
    return settings.uri or os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri(settings.workdir)


def is_transient(err: BaseException) -> bool:
    """True for failures a later attempt may not hit (network, overload, lock), else False."""
    if isinstance(err, requests.HTTPError) and err.response is not None:
        return err.response.status_code >= 500 or err.response.status_code == 429
    if isinstance(
        err, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError
    ):
        return True
    if isinstance(err, MlflowException):
        text = str(err).lower()
        return err.error_code in _TRANSIENT_CODES or any(t in text for t in _TRANSIENT_TEXT)
    return False


@contextlib.contextmanager
def _call_env(timeout_s: int) -> Iterator[None]:
    """MLflow reads these per request; restore the caller's values afterwards."""
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s),
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # our CLI prints what matters
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    old = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Store:
    """An MlflowClient bound to one URI plus the retry policy; the handle every module takes."""

    def __init__(self, settings: TrackingSettings | None = None) -> None:
        self.settings = settings or TrackingSettings()
        self.uri = resolve_uri(self.settings)
        if self.uri == embedded_uri(self.settings.workdir):  # never a server's store
            open_embedded(self.settings.workdir)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) with retry-with-backoff; TrackingUnavailable when it runs out."""
        cfg = self.settings
        for attempt in range(1, cfg.attempts + 1):
            try:
                with _call_env(cfg.http_timeout_s):
                    return fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - classified just below
                if not is_transient(err):
                    raise
                if attempt == cfg.attempts:
                    raise TrackingUnavailable(self.uri, what, attempt, err) from err
                time.sleep(min(cfg.max_backoff_s, cfg.backoff_s * 2 ** (attempt - 1)))
        raise AssertionError("unreachable")  # pragma: no cover

    def experiment_id(self, name: str) -> str:
        """Get or create; embedded experiments keep their artifacts in <workdir>/mlartifacts."""
        found = self.call("get experiment", self.client.get_experiment_by_name, name)
        if found is not None:
            if EXPERIMENT_KIND_TAG not in (found.tags or {}):  # made before the tag existed
                self.call("tag experiment", self.client.set_experiment_tag,
                          found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)  # fmt: skip
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:"):
            root = embedded_artifacts(self.settings.workdir)
            location = (root / experiment_folder(name)).as_uri()
        try:
            # The kind tag says "training runs" to MLflow UIs that read it; MLflow 3.17's UI
            # does not (its GenAI/Model training switch decides): the links granvae prints
            # carry workflowType=machine_learning (pipelines/artifacts.py, `granvae ui`);
            # docs/pipeline.md names the UI code that ignores the tag.
            return self.call(
                "create experiment", self.client.create_experiment, name, location,
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )  # fmt: skip
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = self.call("get experiment", self.client.get_experiment_by_name, name)
            return found.experiment_id
