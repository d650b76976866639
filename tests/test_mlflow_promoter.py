"""The promoter role on a real `mlflow server --app-name granvae-auth` (stack/mlflow_app.py).

MLflow's permissions let whoever creates a model move its `champion` alias and delete it. On
the stack's app: the retrain user creates models and versions and sets `challenger`, but moving
`champion` (over the REST API and the UI's ajax API) and deleting models or versions answer 403;
the promoter, granted MANAGE on each new model, moves `champion` and drops `challenger`, and
still cannot delete; the admin can.
"""

from __future__ import annotations

import secrets

import pytest
from conftest import start_auth_server
from test_mlflow_roles import API, rest

from granvae.stack.mlflow_app import decide

pytestmark = pytest.mark.slow

ADMIN = ("admin", secrets.token_urlsafe(16))
RETRAIN = ("retrain", secrets.token_urlsafe(16))
PROMOTER = ("promoter", secrets.token_urlsafe(16))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-promoter")
    srv = start_auth_server(root, ADMIN[1], "granvae-auth")
    try:
        for user, password in (RETRAIN, PROMOTER):
            body = {"username": user, "password": password}
            assert rest(srv.uri, "POST", f"{API}/users/create", body, ADMIN) == 200
        yield srv.uri
    finally:
        srv.stop()


def _model_with_versions(uri: str, name: str, versions: int = 2) -> None:
    """What the retrain flow does: a run, a model, versions, the challenger alias."""
    import mlflow

    assert rest(uri, "POST", f"{API}/registered-models/create", {"name": name}, RETRAIN) == 200
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_USERNAME", RETRAIN[0])
        mp.setenv("MLFLOW_TRACKING_PASSWORD", RETRAIN[1])
        client = mlflow.MlflowClient(tracking_uri=uri)
        run = client.create_run(client.create_experiment(f"exp-{name}"))
        for _ in range(versions):
            client.create_model_version(name, f"{run.info.artifact_uri}/m", run_id=run.info.run_id)
    alias = {"name": name, "alias": "challenger", "version": str(versions)}
    assert rest(uri, "POST", f"{API}/registered-models/alias", alias, RETRAIN) == 200


def test_retrain_registers_but_cannot_promote_or_delete(server):
    _model_with_versions(server, "line-a")
    champion = {"name": "line-a", "alias": "champion", "version": "2"}
    assert rest(server, "POST", f"{API}/registered-models/alias", champion, RETRAIN) == 403
    ajax = "/ajax-api/2.0/mlflow/registered-models/alias"  # what the UI calls
    assert rest(server, "POST", ajax, champion, RETRAIN) == 403
    other = {"name": "line-a", "alias": "production", "version": "2"}
    assert rest(server, "POST", f"{API}/registered-models/alias", other, RETRAIN) == 403
    version = {"name": "line-a", "version": "1"}
    assert rest(server, "DELETE", f"{API}/model-versions/delete", version, RETRAIN) == 403
    assert rest(server, "DELETE", f"{API}/registered-models/delete", {"name": "line-a"},
                RETRAIN) == 403  # fmt: skip
    assert rest(server, "GET", f"{API}/registered-models/get?name=line-a", None, RETRAIN) == 200


def test_promoter_moves_champion_and_drops_challenger_but_cannot_delete(server):
    _model_with_versions(server, "line-b")
    champion = {"name": "line-b", "alias": "champion", "version": "2"}
    assert rest(server, "POST", f"{API}/registered-models/alias", champion, PROMOTER) == 200
    drop = {"name": "line-b", "alias": "challenger"}
    assert rest(server, "DELETE", f"{API}/registered-models/alias", drop, PROMOTER) == 200
    rollback = {"name": "line-b", "alias": "champion", "version": "1"}
    assert rest(server, "POST", "/ajax-api/2.0/mlflow/registered-models/alias", rollback,
                PROMOTER) == 200  # fmt: skip
    # the champion may not be dropped by retrain either
    gone = {"name": "line-b", "alias": "champion"}
    assert rest(server, "DELETE", f"{API}/registered-models/alias", gone, RETRAIN) == 403
    assert rest(server, "DELETE", f"{API}/registered-models/delete", {"name": "line-b"},
                PROMOTER) == 403  # fmt: skip
    assert rest(server, "DELETE", f"{API}/model-versions/delete",
                {"name": "line-b", "version": "2"}, ADMIN) == 200  # fmt: skip


def test_the_policy_table():
    alias = "/api/2.0/mlflow/registered-models/alias"
    assert decide(alias, "POST", "retrain", "challenger", False) is None
    assert "may not set or delete alias 'champion'" in decide(alias, "POST", "retrain",
                                                               "champion", False)  # fmt: skip
    assert decide(alias, "POST", "promoter", "champion", False) is None
    assert decide(alias, "DELETE", "someone", "champion", True) is None  # MLflow admin
    assert decide(alias, "GET", "retrain", "champion", False) is None  # reading is MLflow's
    deleted = "/ajax-api/2.0/mlflow/registered-models/delete"
    assert "admin only" in decide(deleted, "DELETE", "promoter", None, False)
