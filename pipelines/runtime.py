"""One Prefect API for the whole run, even when no server is configured.

Without PREFECT_API_URL Prefect starts an ephemeral API server per *process*. The sweep's
worker processes would then each start their own (~20 s apiece on a small machine) and
log into databases nobody looks at. So when no API is configured we start the ephemeral
server once, here, and point this process and every worker at it. With a configured
server (PREFECT_API_URL, a test harness) this does nothing.

`prestart()` lets the CLI begin booting that server before it imports torch and granvae:
both are single-threaded start-up work, so on two cores they overlap almost fully.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

_booting: threading.Thread | None = None
_boot_error: list[BaseException] = []


def _configured() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _boot() -> None:
    from prefect.server.api.server import SubprocessASGIServer

    # The singleton Prefect's own client would start; analytics off (offline machines).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    SubprocessASGIServer().start()


def _boot_in_background() -> None:
    try:
        _boot()
    except BaseException as err:  # noqa: BLE001 - re-raised by shared_api in the caller
        _boot_error.append(err)


def prestart() -> None:
    """Start booting the ephemeral API in the background (no-op if one is configured)."""
    global _booting
    if _booting is None and not _configured():
        _booting = threading.Thread(
            target=_boot_in_background, name="prefect-api-boot", daemon=True
        )
        _booting.start()


@contextlib.contextmanager
def shared_api() -> Iterator[str]:
    """Yield the API URL every process of this run uses."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = _configured()
    if configured:
        yield configured
        return
    from prefect.server.api.server import SubprocessASGIServer

    if _booting is not None:
        _booting.join()
    if _boot_error:
        raise RuntimeError("the ephemeral Prefect API did not start") from _boot_error[0]
    server = SubprocessASGIServer()
    if not server.running:
        _boot()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield server.api_url
