"""The MLflow UI, as a person promoting models sees it, in headless Debian Chromium.

Why a browser: the registry API can say an alias exists while the UI page a promoter opens
shows something else (MLflow has had exactly such alias bugs). The screenshot is kept under
test-artifacts/ (gitignored; CI keeps it) so a reviewer can look at what the test saw.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sweep_fixtures import fast_store, make_sweep, unique

from granvae.select import load_rows, select, write_decision
from granvae.tracking import register_winner

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--window-size=1400,1000", "--virtual-time-budget=15000",
]  # fmt: skip


def _chromium(url: str, profile: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *mode, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _dom_with(url: str, tmp_path: Path, wanted: list[str], tries: int = 3) -> str:
    """The rendered DOM; retried because a loaded machine may not finish the SPA in time."""
    dom = ""
    for attempt in range(tries):
        dom = _chromium(url, tmp_path / f"profile-dom-{attempt}", "--dump-dom").stdout
        if all(w in dom for w in wanted):
            break
    return dom


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip("install Debian's chromium: apt-get install -y chromium")
    return CHROMIUM


def test_model_page_shows_the_version_and_its_alias(chromium, mlflow_server, tmp_path):
    store, name = fast_store(mlflow_server, tmp_path), unique("granvae-inspector")
    sweep = make_sweep(tmp_path / "sweep")
    decision = select(load_rows(sweep))
    write_decision(decision, sweep)
    version = register_winner(sweep, decision, name, store=store)
    url = f"{mlflow_server}/#/models/{name}"
    dom = _dom_with(url, tmp_path, ["challenger", f"Version {version}"])
    assert name in dom
    assert f"Version {version}" in dom, dom[-3000:]
    assert "challenger" in dom, dom[-3000:]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "mlflow-model-page.png"
    shot.unlink(missing_ok=True)
    _chromium(url, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000
