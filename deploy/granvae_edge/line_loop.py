"""The server's side of the line loop, kept out of handler.py: capture a scored frame, and
take an operator's verdict from POST /feedback.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .capture import Capture
from .feedback import FeedbackError, record_feedback
from .feedback_token import authorised

if TYPE_CHECKING:
    from .bundle import Bundle
    from .infer import Verdict
    from .server import EdgeServer


def model_fields(bundle: Bundle) -> dict[str, Any]:
    """What a record says about the model that judged the frame."""
    manifest = bundle.manifest
    return {"revision": bundle.revision, "model_sha256": bundle.model_sha256,
            "mlflow_model_uri": manifest.get("mlflow_model_uri"),
            "data_version": manifest.get("data_version")}  # fmt: skip


def capture_verdict(capture: Capture, image: bytes, verdict: Verdict, bundle: Bundle) -> str:
    """Hand one scored frame to the capture queue (never blocks); returns its item id."""
    return capture.submit(
        image, "reject" if verdict.decision else "pass", verdict.score, verdict.threshold,
        latent_mean=verdict.latent_mean, model=model_fields(bundle),
    )  # fmt: skip


def feedback(server: EdgeServer, authorization: str | None, body: bytes) -> tuple[int, dict]:
    """(status, JSON answer) for one POST /feedback."""
    if server.feedback_token is None:
        return 403, {"error": "feedback is off: serve with --feedback-token-file", "status": 403}
    if not authorised(authorization, server.feedback_token):
        return 401, {"error": "missing or wrong bearer token", "status": 401}
    if server.capture is None:
        return 409, {"error": "capture is off: serve with --capture SPOOL", "status": 409}
    try:
        payload = json.loads(body)
        stored = record_feedback(server.capture.spool.root, payload)
    except json.JSONDecodeError as exc:
        return 400, {"error": f"body is not JSON: {exc.msg}", "status": 400}
    except FeedbackError as exc:
        return 400, {"error": str(exc), "status": 400}
    except OSError as exc:
        return 500, {"error": f"cannot store feedback: {exc}", "status": 500}
    return 200, {"ok": True, **stored}
