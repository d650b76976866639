"""MLflow tracking and registry: the only part of granvae that imports mlflow.

- store: where tracking goes (embedded sqlite by default) and retry-with-backoff;
- runs: a sweep folder as one parent run and a child run per candidate (rerunnable);
- registry / staging: the winner as a complete model version with alias challenger;
- promotion: champion moves (promote, rollback) and their history;
- ui: the MLflow UI on the embedded store.
"""

from granvae.tracking.promotion import (
    PromotionRecord,
    champion_check,
    history,
    promote,
    rollback,
)
from granvae.tracking.registry import MODEL_NAME, list_versions, register_winner
from granvae.tracking.runs import log_sweep, read_sweep
from granvae.tracking.store import (
    PromotionRefused,
    RegistrationRefused,
    Store,
    TrackingSettings,
    TrackingUnavailable,
)
from granvae.tracking.ui import serve_ui, ui_command

__all__ = [
    "MODEL_NAME",
    "PromotionRecord",
    "PromotionRefused",
    "RegistrationRefused",
    "Store",
    "TrackingSettings",
    "TrackingUnavailable",
    "champion_check",
    "history",
    "list_versions",
    "log_sweep",
    "promote",
    "read_sweep",
    "register_winner",
    "rollback",
    "serve_ui",
    "ui_command",
]
