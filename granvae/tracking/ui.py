"""`granvae ui`: the MLflow UI on the embedded store, bound to loopback only.

Why loopback only: the embedded store has no authentication, and the UI can move the
`champion` alias that edge devices follow. A shared, authenticated server is the way to
open the registry to a team (point MLFLOW_TRACKING_URI at it); this command is for one laptop.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from granvae.tracking.store import embedded_artifacts, embedded_uri, open_embedded

# MLflow 3's UI picks its "GenAI" or "Model training" side from this query parameter (else
# from the browser's last choice, GenAI in a fresh browser, which opens an experiment on an
# empty Traces overview whatever the experiment's kind tag says): granvae's links carry it.
ML_VIEW = "workflowType=machine_learning"


def runs_url(ui_url: str, experiment_id: str) -> str:
    """The experiment's runs table in the UI at `ui_url`: the candidates' training runs."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{ML_VIEW}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ui_command(workdir: Path | str = ".", host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The `mlflow server` command line serving the embedded store and its artifact folder."""
    if not _loopback(host):
        raise ValueError(f"refusing to serve the embedded store on {host}: loopback only")
    workdir = Path(workdir)
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        embedded_uri(workdir),
        "--artifacts-destination",
        str(embedded_artifacts(workdir)),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def check_port_free(host: str, port: int) -> None:
    """Refuse a busy port before starting: the MLflow server would fail to bind while the
    links printed elsewhere open whatever already listens there (another store)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind((host, port))
        except OSError as err:
            reason = err.strerror or str(err)
            raise ValueError(
                f"port {port} on {host} is busy ({reason}): another server (maybe another "
                f"`granvae ui` on another store) listens there; stop it or pass --port"
            ) from None


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's whole process group (it forks a uvicorn worker), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def serve_ui(workdir: Path | str = ".", host: str = "127.0.0.1", port: int = 5000) -> int:
    """Run the UI until Ctrl-C or SIGTERM; the MLflow server stops with it, never orphaned.

    The server runs in its own process group so that stopping `granvae ui` by any signal
    (not only a terminal's Ctrl-C, which reaches the whole foreground group) takes it down.
    """
    cmd = ui_command(workdir, host, port)
    check_port_free(host, port)
    open_embedded(workdir)  # a moved project: its store's paths follow it before serving
    embedded_artifacts(workdir).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # GenAI job runners: unused
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def _interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(proc)
