"""Start, probe and stop the stack's service processes.

Each service runs in its own session (process group) so `down` can stop it and every child
it forked (uvicorn workers, flow-run subprocesses) with one signal, even from another shell
than the one that started it. Waits are bounded in time; a service that dies while we
wait is reported with the tail of its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from granvae.stack.config import StackError


def spawn(
    name: str, cmd: list[str], log: Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.Popen:
    """A detached service process writing to `log` (appended, so restarts keep history)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
        fh.flush()
        return subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd=cwd,
        )  # fmt: skip


def alive(pid: int | None) -> bool:
    """True while the process exists and is not a zombie of ours."""
    if not pid:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our exited child
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: started by another `granvae stack up`
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(pid: int | None, timeout: float = 20.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after `timeout` seconds."""
    if not alive(pid):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.2)
    raise StackError(f"process {pid} did not stop after SIGKILL")


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Any HTTP answer below 500 means the server is up and answering."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as err:
        return err.code < 500
    except (OSError, ValueError):
        return False


def log_tail(log: Path, chars: int = 1500) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def wait_until(
    name: str, ready: Callable[[], bool], proc_alive: Callable[[], bool], log: Path,
    timeout: float,
) -> None:  # fmt: skip
    """Poll `ready` until true; fail at once when the process died, or after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not proc_alive():
            raise StackError(f"{name} exited during start-up; log {log}:\n{log_tail(log)}")
        time.sleep(0.5)
    raise StackError(f"{name} not ready after {timeout:.0f} s; log {log}:\n{log_tail(log)}")
