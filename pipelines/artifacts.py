"""What a person sees in the Prefect UI: the leaderboard and where the model went.

Artifacts are keyed (`sweep-leaderboard`, `retrain-summary`) so the UI shows their history
across scheduled runs; the values are copied from files granvae wrote, never recomputed.
"""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from granvae.tracking.ui import ML_VIEW, runs_url

LEADERBOARD_KEY = "sweep-leaderboard"
SUMMARY_KEY = "retrain-summary"
COLUMNS = (
    "candidate_id",
    "status",
    "granularity",
    "beta",
    "latent_dim",
    "seed",
    "elbo",
    "recall_at_far",
    "image_auroc",
    "latency_p95_b1_ms",
    "train_seconds",
)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return None if value != value else round(value, 4)
    return value


def leaderboard(rows: list[dict[str, Any]], decision_rows: list[dict[str, Any]]) -> list[dict]:
    """One line per candidate, ranked ones first (rank from granvae.select)."""
    ranks = {r["candidate_id"]: r for r in decision_rows}
    table = []
    for row in rows:
        line = {k: _cell(row.get(k)) for k in COLUMNS}
        judged = ranks.get(row["candidate_id"], {})
        line["passed_gates"] = judged.get("passed_all")
        line["rank"] = judged.get("rank")
        table.append(line)
    return sorted(table, key=lambda r: (r["rank"] is None, r["rank"] or 0))


def publish_leaderboard(table: list[dict], why: str) -> None:
    create_table_artifact(table=table, key=LEADERBOARD_KEY, description=f"Sweep: {why}")


def ui_base(tracking_uri: str) -> str:
    """The UI's address: the server itself, or where `granvae ui` serves the embedded store."""
    base = tracking_uri.rstrip("/")
    return base if base.startswith("http") else "http://127.0.0.1:5000"


def experiment_link(tracking_uri: str, experiment_id: str) -> str:
    """The experiment's runs table (the candidates' training runs, curves while training)."""
    return runs_url(ui_base(tracking_uri), experiment_id)


def live_runs_line(tracking: dict[str, Any]) -> str | None:
    """Where to watch the candidates train (their runs log each epoch); None when live
    logging is off or the tracking server does not answer (training goes on regardless)."""
    from granvae.tracking import TrackingSettings
    from granvae.tracking.live import live_store

    settings = TrackingSettings.model_validate(tracking)
    if not settings.live:
        return None
    try:  # also creates the experiment (and an embedded store) before the workers start
        store = live_store(settings)
        exp_id = store.experiment_id(settings.experiment)
    except Exception:  # noqa: BLE001 - a link is not worth failing a retrain for
        return None
    where = "" if store.uri.startswith("http") else " (run `granvae ui` in another terminal)"
    return f"training curves live in MLflow: {experiment_link(store.uri, exp_id)}{where}"


def links(tracking_uri: str, experiment_id: str, run_id: str, model: str, version: int) -> dict:
    """Deep links into the MLflow UI; the embedded store is opened with `granvae ui`."""
    base = ui_base(tracking_uri)
    return {
        "runs": experiment_link(tracking_uri, experiment_id),
        "run": f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{ML_VIEW}",
        "version": f"{base}/#/models/{model}/versions/{version}",
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    metrics = "\n".join(f"| {k} | {v:.4g} |" for k, v in summary["metrics"].items())
    promo = summary.get("promotion") or {}
    return (
        f"# Retrain: {summary['model_name']} version {summary['version']} (challenger)\n\n"
        f"- winner: `{summary['winner']}`\n"
        f"- data version: `{summary['data_version']}`\n"
        f"- MLflow run: [{summary['run_id']}]({summary['links']['run']})\n"
        f"- registered version: [{summary['model_name']} v{summary['version']}]"
        f"({summary['links']['version']})\n"
        f"- bundle: `{summary['bundle']}` ({summary['verify']})\n"
        f"- auto-promotion: {promo.get('reason', 'off')}\n"
        f"- MLflow UI: `{summary['ui']}`\n\n"
        f"| metric | value |\n|---|---|\n{metrics}\n\n"
        f"Why this candidate: {summary['why']}\n"
    )


def publish_summary(summary: dict[str, Any]) -> None:
    create_markdown_artifact(
        markdown=summary_markdown(summary), key=SUMMARY_KEY, description="Retrain outcome"
    )
