"""The stack's MLflow app: MLflow's basic-auth app plus the rules its permissions cannot state.

Why: MLflow's permissions are per registered model and coarse. Creating versions, setting the
`challenger` alias and moving `champion` all need the same EDIT permission, and the user who
creates a model gets MANAGE on it, which also deletes it. So the retrain flow's user could promote
its own challenger or wipe the registry, and issue 14 asks for a promoter role distinct from it.
This app (``mlflow server --app-name granvae-auth``; registered as an ``mlflow.app`` entry point)
runs MLflow's own checks first and then these, by user name:

- aliases: ``champion`` and any other alias except ``challenger`` are set or deleted only by
  an MLflow admin or a promoter (``GRANVAE_MLFLOW_PROMOTERS``, comma-separated user names,
  default ``promoter``); anyone with EDIT on the model may set ``challenger``;
- deleting a registered model or a model version: MLflow admins only;
- every registered model created on this server gives each promoter MANAGE on it (MLflow
  needs it to delete the `challenger` alias at promotion); the deletes above stay refused.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask, Response, g, jsonify, request

_log = logging.getLogger(__name__)

CHALLENGER = "challenger"  # the one alias the retrain flow sets
PROMOTERS_ENV = "GRANVAE_MLFLOW_PROMOTERS"
_ALIAS = "/mlflow/registered-models/alias"
_ADMIN_ONLY = ("/mlflow/registered-models/delete", "/mlflow/model-versions/delete")
_CREATE_MODEL = "/mlflow/registered-models/create"


def promoters() -> set[str]:
    return {u.strip() for u in os.environ.get(PROMOTERS_ENV, "promoter").split(",") if u.strip()}


def _param(name: str) -> str | None:
    """A request parameter from the query string or the JSON body (clients use both)."""
    if name in request.args:
        return request.args[name]
    body = request.get_json(force=True, silent=True)
    value = body.get(name) if isinstance(body, dict) else None
    return None if value is None else str(value)


def _forbidden(why: str) -> Response:
    resp = jsonify({"error_code": "PERMISSION_DENIED", "message": why})
    resp.status_code = 403
    return resp


def _is_admin(user: str) -> bool:
    from mlflow.server.auth import store

    try:
        return bool(store.get_user(user).is_admin)
    except Exception:  # an unknown user is not an admin
        return False


def decide(path: str, method: str, user: str | None, alias: str | None,
           is_admin: bool) -> str | None:  # fmt: skip
    """Why the request is refused, or None. Pure, so the policy is tested without a server."""
    if is_admin:
        return None
    if path.endswith(_ADMIN_ONLY) and method == "DELETE":
        return f"user {user!r} may not delete registered models or versions (admin only)"
    if path.endswith(_ALIAS) and method in ("POST", "DELETE"):
        if alias == CHALLENGER or user in promoters():
            return None
        return (f"user {user!r} may not set or delete alias {alias!r}: only a promoter "
                f"({', '.join(sorted(promoters()))}) or an admin may")  # fmt: skip
    return None


def _guard() -> Response | None:
    """Runs after MLflow's own check (registered later), so the user is authenticated here."""
    user = g.get("mlflow_authenticated_user")
    if user is None:  # an unprotected route, or MLflow already answered
        return None
    path, method = request.path, request.method
    if not (path.endswith(_ADMIN_ONLY) or path.endswith(_ALIAS)):
        return None
    alias = _param("alias") if path.endswith(_ALIAS) else None
    why = decide(path, method, user, alias, _is_admin(user))
    return _forbidden(why) if why else None


def _grant_promoters(resp: Response) -> Response:
    created = request.method == "POST" and resp.status_code == 200
    if created and request.path.endswith(_CREATE_MODEL):
        from mlflow.server.auth import store

        name = (resp.get_json(silent=True) or {}).get("registered_model", {}).get("name")
        for user in promoters():
            try:
                store.create_registered_model_permission(name, user, "MANAGE")
            except Exception as exc:  # no such user yet: `granvae stack up` grants later
                _log.warning("granvae-auth: no MANAGE on %r for %r: %s", name, user, exc)
    return resp


def create_app(app: Flask | None = None) -> Any:
    """MLflow's basic-auth app with the rules above; what MLflow's own factory returns."""
    from mlflow.server import app as mlflow_flask_app
    from mlflow.server.auth import create_app as basic_auth_app

    flask_app = app or mlflow_flask_app
    served = basic_auth_app(flask_app)
    flask_app.before_request(_guard)  # after basic-auth's own check: order of registration
    flask_app.after_request(_grant_promoters)
    return served
