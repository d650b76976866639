"""Roles on the stack's MLflow: who may read, who may write, and their credentials files.

Why: with an open registry any local process could delete a registered model or move an alias
(issue 14). The stack's MLflow runs ``mlflow server --app-name granvae-auth``
(granvae/stack/mlflow_app.py): MLflow's basic-auth app (users and permissions in the stack's
PostgreSQL, database `mlflow_auth`; new users get READ on everything and MANAGE on what they
create) plus the rules MLflow's permissions cannot state: only a promoter or an admin moves
`champion`, only an admin deletes models or versions.

Roles: ``admin`` (everything: user management, deletes), ``retrain`` (the worker's flows:
create runs, models and versions, and the `challenger` alias), ``promoter`` (`granvae promote`
and rollback, or the UI: moves `champion`, writes the promotion record; MANAGE on every model,
granted as models are created and again at every `stack up`), ``device`` (read:
`granvae-edge pull`). Each role's ``KEY=VALUE`` credentials file lives in
``<root>/credentials/<role>.env``, created 0600 from the first byte; ``granvae stack env --role
R`` prints the same lines as exports.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from granvae.stack.config import StackError, StackState, s3_credentials

ROLES = ("admin", "retrain", "promoter", "device")
# Roles with a key on the local S3 server (s3_server.policy): admin (everything, e.g. wiping
# and recreating the bucket), retrain (objects: read, list, write; never delete). Devices
# and the promoter get artifacts through MLflow's proxy and hold no S3 key.
S3_ROLES = ("admin", "retrain")
USERS_API = "/api/2.0/mlflow/users"
MODELS_API = "/api/2.0/mlflow/registered-models"
GRANT_API = "/api/3.0/mlflow/users/permissions/grant"


def fill_secrets(state: StackState) -> None:
    """Generate whatever password or key the state lacks (a new stack, or one from before)."""
    for role in ROLES:
        state.mlflow_users.setdefault(role, secrets.token_urlsafe(24))
    state.flask_secret = state.flask_secret or secrets.token_hex(32)
    for service in ("mlflow", "prefect"):  # their PostgreSQL roles (postgres.create_databases)
        state.pg_roles.setdefault(service, secrets.token_urlsafe(24))
    if state.local_s3:
        for role in S3_ROLES:
            state.s3_keys.setdefault(role, {
                "id": "AKIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16)),
                "secret": secrets.token_urlsafe(30)[:40]})  # fmt: skip


_KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # the shape of an AWS access key id


def s3_env(state: StackState, role: str) -> dict[str, str]:
    """AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of a role: the local server's key for that
    role, or the caller's environment for a real endpoint (its roles are the plant's IAM)."""
    if not state.local_s3:
        return s3_credentials()
    key = state.s3_keys.get(role)
    if key is None:
        raise StackError(f"role {role!r} has no S3 key (S3 roles: {', '.join(S3_ROLES)})")
    return {"AWS_ACCESS_KEY_ID": key["id"], "AWS_SECRET_ACCESS_KEY": key["secret"]}


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, 0600 from the first byte (O_EXCL temp, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def auth_config(state: StackState) -> Path:
    """The basic-auth app's ini (it holds the admin and database passwords: 0600)."""
    folder = Path(state.root) / "mlflow"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    from granvae.stack.postgres import login

    user, password = login(state, "mlflow")
    db = (f"postgresql+psycopg2://{user}:{password}@127.0.0.1:"
          f"{state.ports['postgres']}/mlflow_auth")  # fmt: skip
    path = folder / "auth.ini"
    write_private(path, (
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {db}\nadmin_username = admin\n"
        f"admin_password = {state.mlflow_users['admin']}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    ))  # fmt: skip
    return path


def server_env(state: StackState) -> dict[str, str]:
    return {"MLFLOW_AUTH_CONFIG_PATH": str(auth_config(state)),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": state.flask_secret}  # fmt: skip


def credentials(state: StackState, role: str) -> dict[str, str]:
    """A role's MLflow user, and its local S3 key when it has one."""
    if role not in ROLES:
        raise StackError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    creds = {"MLFLOW_TRACKING_USERNAME": role,
             "MLFLOW_TRACKING_PASSWORD": state.mlflow_users[role]}  # fmt: skip
    if state.local_s3 and role in state.s3_keys:
        creds.update(s3_env(state, role))
    return creds


def credentials_file(state: StackState, role: str) -> Path:
    return Path(state.root) / "credentials" / f"{role}.env"


def _admin_call(state: StackState, method: str, path: str, body: dict | None, what: str,
                tolerate: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """One MLflow REST call as the stack's admin; ``tolerate``: error texts that mean done."""
    admin = base64.b64encode(f"admin:{state.mlflow_users['admin']}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {admin}"}
    req = urllib.request.Request(f"{state.mlflow_uri}{path}", data=data, method=method,
                                 headers=headers)  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        if any(t in text for t in tolerate):
            return {}
        raise StackError(f"mlflow: cannot {what}: HTTP {exc.code} {text[:200]}") from None
    except OSError as exc:
        raise StackError(f"mlflow: cannot {what}: {exc}") from exc


def _create_user(state: StackState, role: str) -> None:
    body = {"username": role, "password": state.mlflow_users[role]}
    _admin_call(state, "POST", f"{USERS_API}/create", body, f"create user {role!r}",
                ("RESOURCE_ALREADY_EXISTS", "already exists"))  # fmt: skip


def grant_promoter(state: StackState) -> int:
    """MANAGE for the promoter on every registered model (the app grants it on new ones; this
    covers models made before the role existed, or while the promoter user was missing)."""
    token, names = None, []
    while True:
        query = "?max_results=1000" + (f"&page_token={quote(token)}" if token else "")
        page = _admin_call(state, "GET", f"{MODELS_API}/search{query}", None, "list models")
        names += [m["name"] for m in page.get("registered_models", [])]
        token = page.get("next_page_token")
        if not token:
            break
    for name in names:  # an existing grant is left as it is (only the stack makes them)
        body = {"username": "promoter", "resource_type": "registered_model",
                "resource_id": name, "permission": "MANAGE"}  # fmt: skip
        _admin_call(state, "POST", GRANT_API, body, f"grant promoter MANAGE on {name!r}",
                    ("already exists", "ALREADY_EXISTS"))  # fmt: skip
    return len(names)


def ensure_users(state: StackState) -> None:
    """Create the non-admin users (the app makes admin) and write every credentials file."""
    for role in ROLES:
        if role != "admin":
            _create_user(state, role)
    grant_promoter(state)
    folder = Path(state.root) / "credentials"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for role in ROLES:
        lines = [f"MLFLOW_TRACKING_URI={state.mlflow_uri}"]
        lines += [f"{k}={v}" for k, v in credentials(state, role).items()]
        write_private(credentials_file(state, role), "\n".join(lines) + "\n")
