"""The stack's local S3 endpoint: moto, with every request's signature and role checked and
its admin API switched off.

Why not plain ``python -m moto.server``: it answers anyone (any key, or none), and its
``/moto-api/`` routes (reset, reset-auth, the dashboard) let any process on the host wipe
every bucket, and with it every model artifact and DVC snapshot, with one POST. Here:

- moto's IAM emulation is on from the first request (``INITIAL_NO_AUTH_ACTION_COUNT = 0``):
  a request must be SigV4-signed with a known key, and the key's user policy must allow
  the action (anything else: 403);
- the users, their policies and their keys are created in-process before the socket opens,
  from the stack's key file (one key per role, roles.S3_ROLES), so the keys stay the same
  across restarts of this server and nothing is created over the wire unauthenticated;
- every ``/moto-api`` path answers 403 before moto sees it.

Run as ``python -m granvae.stack.s3_server --port P --keys FILE`` (services.start_s3).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ADMIN_PREFIX = "/moto-api"

# What each role may do on the stack's bucket. `retrain` (MLflow's artifact proxy, the
# worker's flows, DVC): read, list and write objects, never delete them nor touch the
# bucket's configuration (a lifecycle rule or a policy would be a slower wipe).
RETRAIN_ACTIONS = [
    "s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:GetBucketLocation",
    "s3:HeadBucket",  # moto's name for HEAD on the bucket (AWS checks ListBucket)
    "s3:ListBucketMultipartUploads", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload",
]  # fmt: skip


def policy(role: str, bucket: str) -> dict[str, Any]:
    """The IAM policy document of a role (admin: everything on S3)."""
    if role == "admin":
        return {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}  # fmt: skip
    resources = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": RETRAIN_ACTIONS, "Resource": resources}]}  # fmt: skip


def provision(keys: dict[str, dict[str, str]], bucket: str) -> None:
    """Create one IAM user per role, its policy and its access key (ours, not moto's)."""
    from moto import settings
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    backend = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for role, key in keys.items():
        user = f"granvae-{role}"
        backend.create_user("us-east-1", user)
        backend.put_user_policy(user, f"granvae-{role}", json.dumps(policy(role, bucket)))
        created = backend.create_access_key(user)
        created.access_key_id = key["id"]
        created.secret_access_key = key["secret"]
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on every request is checked


def _denied(start_response: Callable[..., Any], why: str) -> Iterable[bytes]:
    body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
            f"<Message>{why}</Message></Error>").encode()  # fmt: skip
    start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                     ("Content-Length", str(len(body)))])  # fmt: skip
    return [body]


def without_admin_api(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """WSGI wrapper: /moto-api/* (reset, reset-auth, dashboard) and unsigned requests answer
    403 (moto itself answers an unsigned request with a 500)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if str(environ.get("PATH_INFO", "")).startswith(ADMIN_PREFIX):
            return _denied(start_response, "the stack's S3 server has no admin API")
        signed = "HTTP_AUTHORIZATION" in environ or "X-Amz-Signature" in str(
            environ.get("QUERY_STRING", "")
        )
        if not signed:
            return _denied(start_response, "anonymous requests are refused: sign with a key")
        return app(environ, start_response)

    return wrapped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keys", type=Path, required=True, help="the stack's S3 key file")
    parser.add_argument("--bucket", required=True)
    args = parser.parse_args(argv)

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    provision(json.loads(args.keys.read_text()), args.bucket)
    app = DomainDispatcherApplication(create_backend_app)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run_simple(args.host, args.port, without_admin_api(app), threaded=True,
               request_handler=MotoRequestHandler)  # fmt: skip


if __name__ == "__main__":
    main()
