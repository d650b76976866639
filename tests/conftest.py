"""Shared fixtures: a real `mlflow server` process for the tracking and registry tests.

A session-scoped server (sqlite backend + proxied local artifact folder, like production's
`mlflow server --artifacts-destination`) keeps the suite fast; tests that kill a server start
their own with `start_mlflow_server` so the shared one is never disturbed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# Session fixtures defined elsewhere must be imported here, once, to stay session-wide.
from prefect_fixtures import prefect_harness  # noqa: E402, F401


@pytest.fixture(scope="session", autouse=True)
def _signing_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Exports sign bundles (granvae.signing): the suite's key pair stays out of $HOME."""
    before = os.environ.get("GRANVAE_KEYS_DIR")
    os.environ["GRANVAE_KEYS_DIR"] = str(tmp_path_factory.mktemp("signing-keys") / "keys")
    yield
    if before is None:
        os.environ.pop("GRANVAE_KEYS_DIR", None)
    else:
        os.environ["GRANVAE_KEYS_DIR"] = before


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MlflowServer:
    """A running `mlflow server`; `root` holds its sqlite file, artifacts and log."""

    root: Path
    port: int
    proc: subprocess.Popen

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server's whole process group (it forks a uvicorn worker)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)

    def kill(self) -> None:
        """kill -9: what a crashed host looks like to the client."""
        self.stop(signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def restart(self) -> None:
        """A fresh process on the same backend, artifact folder and port (so the same URI)."""
        self.stop()
        self.proc = start_mlflow_server(self.root, self.port).proc


def _wait_healthy(server: MlflowServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            log = (server.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mlflow server exited with {server.proc.returncode}:\n{log}")
        try:
            with urllib.request.urlopen(server.uri + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"mlflow server at {server.uri} not healthy after {timeout}s")


def start_mlflow_server(
    root: Path,
    port: int | None = None,
    timeout: float = 90,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> MlflowServer:
    """Start (or restart, on the same root) a server on a free loopback port.

    ``extra_args``/``extra_env``: e.g. ``("--app-name", "basic-auth")`` and its
    ``MLFLOW_AUTH_CONFIG_PATH`` (tests/test_mlflow_roles.py).
    """
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), *extra_args]  # fmt: skip
    # GenAI job runners (huey consumers, one process each) are of no use here and slow startup.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(extra_env or {})}
    with open(root / "server.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    server = MlflowServer(root, port, proc)
    _wait_healthy(server, timeout)
    return server


def start_auth_server(root: Path, admin_password: str, app_name: str) -> MlflowServer:
    """A server with an auth app (``basic-auth``, or the stack's ``granvae-auth``): users in
    their own sqlite database under ``root``, default permission READ, user ``admin``."""
    import secrets

    root.mkdir(parents=True, exist_ok=True)
    ini = root / "auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\nadmin_username = admin\n"
        f"admin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}  # fmt: skip
    return start_mlflow_server(root / "server", extra_args=("--app-name", app_name),
                               extra_env=env)  # fmt: skip


@pytest.fixture(scope="session")
def mlflow_server_process(tmp_path_factory) -> Iterator[MlflowServer]:
    """The session's server process; a test that kills it must `restart()` it (see below)."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_process: MlflowServer) -> str:
    """URI of a real `mlflow server` shared by the whole session."""
    return mlflow_server_process.uri


@pytest.fixture
def killable_mlflow_server(mlflow_server_process: MlflowServer) -> Iterator[MlflowServer]:
    """The shared server, for a test that kills it; it is running again when the test ends."""
    yield mlflow_server_process
    if not mlflow_server_process.alive():
        mlflow_server_process.restart()
