"""The MLflow UI, as a person promoting models sees it, in headless Debian Chromium.

Why a browser: the registry API can say an alias exists while the UI page a promoter opens
shows something else (MLflow has had exactly such alias bugs). The screenshot is kept under
test-artifacts/ (gitignored; CI keeps it) so a reviewer can look at what the test saw.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from live_fixtures import Pause, in_thread, train_live
from sweep_fixtures import fast_store, make_sweep, unique

from granvae.select import load_rows, select, write_decision
from granvae.tracking import log_sweep, register_winner
from granvae.tracking.runs import find_runs
from granvae.tracking.ui import ML_VIEW
from pipelines.artifacts import experiment_link

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


def _points(dom: str, title: str) -> int:
    """Points plotted in the chart titled `title` (plotly draws one path.point per step)."""
    start = dom.find(f'title="{title}"')
    if start < 0:
        return 0
    points = re.search(r'<g class="points">(.*?)</g>', dom[start:], re.S)
    return points.group(1).count('class="point"') if points else 0


def test_experiment_opens_on_training_runs_with_live_curves(chromium, mlflow_server, tmp_path):
    """A newcomer follows the link granvae prints while a sweep trains: the experiment opens
    on its runs table (not MLflow 3's GenAI overview), the training runs are rows of their
    own (not folded under a sweep row), and the training run's chart shows the epochs done
    so far while it is still RUNNING."""
    store, experiment = fast_store(mlflow_server, tmp_path), unique("granvae-live")
    sweep = make_sweep(tmp_path / "sweep", sweep_id="sweep-ui-1")
    log_sweep(sweep, experiment, store=store)  # a finished sweep: one sweep run, 3 candidates
    pause = Pause(at=3)
    thread, box = in_thread(
        lambda: train_live(
            store, experiment, "sweep-ui-2", "g2-training", tmp_path / "c", None, pause
        )  # fmt: skip
    )
    try:
        assert pause.reached.wait(60), box
        exp_id = store.experiment_id(experiment)
        (run,) = find_runs(store, exp_id, candidate_id="g2-training")
        assert run.info.status == "RUNNING"
        url = experiment_link(mlflow_server, exp_id)
        dom = _dom_with(url, tmp_path, ["g2-training", "g1-b4-d4-s0"])
        assert "g2-training" in dom and "sweep sweep-ui-1" in dom, dom[-3000:]
        assert {"g1-b4-d4-s0", "g2-b4-d4-s0", "g4-b4-d4-s0"} <= set(
            re.findall(r"g\d-b4-d4-s0", dom)
        )
        chart = (
            f"{mlflow_server}/#/experiments/{exp_id}/runs/{run.info.run_id}/model-metrics?{ML_VIEW}"
        )
        page = ""
        for attempt in range(5):  # the charts load after the page: a longer virtual budget
            page = _chromium(chart, tmp_path / f"profile-chart-{attempt}", "--dump-dom",
                             "--virtual-time-budget=60000").stdout  # fmt: skip
            if _points(page, "train/elbo"):
                break
        assert _points(page, "train/elbo") == 3, page[-3000:]  # epochs 1..3, training paused
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "mlflow-live-curves.png"
        shot.unlink(missing_ok=True)
        _chromium(chart, tmp_path / "profile-chart-shot", f"--screenshot={shot}",
                  "--virtual-time-budget=60000")  # fmt: skip
        assert shot.is_file() and shot.stat().st_size > 10_000
    finally:
        pause.release()
        thread.join(60)
    assert box["result"].status == "finished"
