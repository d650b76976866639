"""A real Prefect API for the pipeline tests, started once per session.

Prefect's temporary API server takes ~25 s to start on a small machine, so one harness
serves every pipeline test. Import `prefect_harness` into tests/conftest.py (only there:
a session fixture imported into several test modules would start once per module).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[str]:
    """Yield the harness API URL (subprocesses get it as PREFECT_API_URL)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield str(PREFECT_API_URL.value())
