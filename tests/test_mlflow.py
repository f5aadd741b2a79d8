"""The stock MLflow client (``mlflow`` from PyPI) pointed at runstream's query API.

Real services: every MLflow write becomes an event on Kafka, the processors materialize
it and the answer comes once it is readable; the same runs are read back through
runstream's own API.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException, RestException

from runstream.settings import Settings
from tests.support.names import unique


@pytest.fixture(scope="module")
def tracking(services: Settings) -> Iterator[str]:
    """MLflow's fluent API and clients pointed at runstream (``MLFLOW_TRACKING_URI``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", services.api_url)
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a failure shows at once, not after backoff
        mlflow.set_tracking_uri(services.api_url)
        yield services.api_url
        while mlflow.active_run() is not None:
            mlflow.end_run()


def api(base: str, path: str, **params: Any) -> Any:
    """GET runstream's own API."""
    resp = requests.get(f"{base}/api{path}", params=params, timeout=30)
    resp.raise_for_status()
    return resp.json()


def mlflow_post(base: str, endpoint: str, body: Any) -> requests.Response:
    return requests.post(f"{base}/api/2.0/mlflow/{endpoint}", json=body, timeout=30)


def test_fluent_session_round_trip(tracking: str, tmp_path: Path) -> None:
    name = unique("mlflow-fluent")
    exp = mlflow.set_experiment(name)
    with mlflow.start_run(run_name="first") as run:
        for step, value in enumerate([0.5, 0.4, 0.3]):
            mlflow.log_metric("loss", value, step=step)
        mlflow.log_param("alpha", 0.03)
        mlflow.set_tag("team", "a")
        artifact = tmp_path / "notes.txt"
        artifact.write_text("hello runstream")
        mlflow.log_artifact(str(artifact))
        mlflow.log_artifact(str(artifact), artifact_path="sub/dir")
    run_id = run.info.run_id
    client = MlflowClient()
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "first" and got.info.end_time
    assert got.info.experiment_id == exp.experiment_id
    assert got.data.metrics == {"loss": 0.3}
    assert got.data.params == {"alpha": "0.03"}
    assert got.data.tags["team"] == "a"
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.4), (2, 0.3)]
    frame = mlflow.search_runs(experiment_names=[name])
    assert list(frame["run_id"]) == [run_id]
    assert frame.loc[0, "metrics.loss"] == 0.3 and frame.loc[0, "params.alpha"] == "0.03"
    assert sorted((f.path, f.is_dir) for f in client.list_artifacts(run_id)) == [("notes.txt", False), ("sub", True)]
    assert [f.path for f in client.list_artifacts(run_id, "sub/dir")] == ["sub/dir/notes.txt"]
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="sub/dir/notes.txt", dst_path=str(tmp_path / "d"))
    assert Path(local).read_text() == "hello runstream"
    # The same run in runstream's own API (what its UI shows).
    detail = api(tracking, f"/runs/{uuid.UUID(run_id)}")
    assert detail["experiment"] == name and detail["status"] == "completed" and detail["name"] == "first"
    assert detail["params"] == {"alpha": "0.03"} and detail["metrics"]["loss"]["count"] == 3
    assert {f["path"] for f in api(tracking, f"/runs/{run_id}/files")["files"]} == {"notes.txt", "sub/dir/notes.txt"}
    listed = api(tracking, f"/experiments/{name}/runs")
    assert [r["run_id"] for r in listed["runs"]] == [str(uuid.UUID(run_id))]
    assert listed["runs"][0]["params"] == {"alpha": "0.03"}


@pytest.fixture(scope="module")
def sweep(tracking: str) -> tuple[str, dict[str, str]]:
    """Three runs with metrics, params and tags to search; returns the experiment name and
    run name -> id."""
    name = unique("mlflow-search")
    exp_id = MlflowClient().create_experiment(name)
    ids = {}
    for run_name, alpha, mse, team in (("r1", "0.1", 3000.0, "a"), ("r2", "0.5", 3500.0, "b"), ("r3", "0.9", 3200.0, "a")):
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
            mlflow.log_params({"alpha": alpha, "solver": "svd" if team == "a" else "lsqr"})
            mlflow.log_metric("mse", mse)
            mlflow.set_tag("team", team)
        ids[run_name] = run.info.run_id
    return name, ids


FILTERS = [
    ("", {"r1", "r2", "r3"}),
    ("metrics.mse < 3300", {"r1", "r3"}),
    ("metrics.mse >= 3200 and params.alpha != '0.9'", {"r2"}),
    ("params.alpha = '0.5'", {"r2"}),
    ("params.alpha > 0.2", {"r2", "r3"}),
    ("tags.team = 'a'", {"r1", "r3"}),
    ("tags.team != 'a'", {"r2"}),
    ("params.solver LIKE 'ls%'", {"r2"}),
    ("params.solver ILIKE 'SV%'", {"r1", "r3"}),
    ("attributes.run_name IN ('r1', 'r2')", {"r1", "r2"}),
    ("attributes.status = 'FINISHED'", {"r1", "r2", "r3"}),
    ("attributes.status = 'RUNNING'", set()),
    ("tags.`team` = 'b' or metrics.mse = 3000", {"r1", "r2"}),
    ("metrics.missing > 0", set()),
    ("attributes.start_time > 0", {"r1", "r2", "r3"}),
]


@pytest.mark.parametrize(("query", "expected"), FILTERS)
def test_search_filter_grammar(sweep: tuple[str, dict[str, str]], query: str, expected: set[str]) -> None:
    name, ids = sweep
    found = mlflow.search_runs(experiment_names=[name], filter_string=query, output_format="list")
    assert {r.info.run_name for r in found} == expected
    assert {r.info.run_id for r in found} == {ids[n] for n in expected}


def test_search_order_and_pages(sweep: tuple[str, dict[str, str]]) -> None:
    name, ids = sweep
    ordered = mlflow.search_runs(experiment_names=[name], order_by=["metrics.mse DESC"], output_format="list")
    assert [r.info.run_name for r in ordered] == ["r2", "r3", "r1"]
    by_id = mlflow.search_runs(experiment_names=[name], output_format="list",
                               filter_string=f"attributes.run_id IN ('{ids['r1']}', '{uuid.UUID(ids['r2'])}')")
    assert {r.info.run_name for r in by_id} == {"r1", "r2"}
    by_param = mlflow.search_runs(experiment_names=[name], order_by=["params.alpha DESC"], output_format="list")
    assert [r.info.run_name for r in by_param] == ["r3", "r2", "r1"]
    with pytest.raises(MlflowException, match="Invalid order_by"):
        mlflow.search_runs(experiment_names=[name], order_by=["tags.team"])
    client = MlflowClient()
    exp_id = client.get_experiment_by_name(name).experiment_id
    first = client.search_runs([exp_id], max_results=2, order_by=["attributes.run_name ASC"])
    assert [r.info.run_name for r in first] == ["r1", "r2"] and first.token
    second = client.search_runs([exp_id], max_results=2, order_by=["attributes.run_name ASC"], page_token=first.token)
    assert [r.info.run_name for r in second] == ["r3"] and not second.token


INVALID_FILTERS = [
    "metrics.mse <",
    "metrics.mse = 'abc'",
    "unknown.x = 1",
    "params.alpha = '0.1' and",
    "(tags.team = 'a'",
]


@pytest.mark.parametrize("query", INVALID_FILTERS)
def test_search_invalid_filter_is_400(sweep: tuple[str, dict[str, str]], query: str) -> None:
    name, _ = sweep
    with pytest.raises(MlflowException) as err:
        mlflow.search_runs(experiment_names=[name], filter_string=query)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert err.value.get_http_status_code() == 400
    assert "position" in str(err.value)


def test_params_are_immutable(tracking: str) -> None:
    mlflow.set_experiment(unique("mlflow-params"))
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.1)
        mlflow.log_param("lr", 0.1)  # the same value again is fine
        with pytest.raises(MlflowException) as err:
            mlflow.log_param("lr", 0.2)
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"
        assert "already logged with value='0.1'" in str(err.value)
        with pytest.raises(MlflowException):  # in a batch too
            MlflowClient().log_batch(run.info.run_id, params=[Param("lr", "0.3")])
    assert MlflowClient().get_run(run.info.run_id).data.params == {"lr": "0.1"}


def test_log_batch_and_limits(tracking: str) -> None:
    mlflow.set_experiment(unique("mlflow-batch"))
    client = MlflowClient()
    with mlflow.start_run() as run:
        rid = run.info.run_id
        client.log_batch(rid, metrics=[Metric("m", float(i), 1_700_000_000_000 + i, i) for i in range(1000)],
                         params=[Param(f"p{i}", str(i)) for i in range(100)][:0],
                         tags=[RunTag("t", "v")])
        client.log_batch(rid, params=[Param(f"p{i}", str(i)) for i in range(100)])
    got = client.get_run(rid)
    assert got.data.metrics["m"] == 999.0 and len(got.data.params) == 100 and got.data.tags["t"] == "v"
    assert len(client.get_metric_history(rid, "m")) == 1000
    point = {"key": "x", "value": 1.0, "timestamp": 1, "step": 0}
    cases = [
        ({"metrics": [point] * 1001}, "at most 1000 metrics"),
        ({"params": [{"key": f"k{i}", "value": "v"} for i in range(101)]}, "at most 100 params"),
        ({"tags": [{"key": f"k{i}", "value": "v"} for i in range(101)]}, "at most 100 tags"),
        ({"metrics": [point] * 950, "tags": [{"key": f"k{i}", "value": "v"} for i in range(60)]}, "at most 1000 total"),
        ({"metrics": [{**point, "step": -1}]}, "steps in [0, 2**62]"),
        ({"metrics": [{**point, "value": "abc"}]}, "expected a number"),
    ]
    for body, message in cases:
        resp = mlflow_post(tracking, "runs/log-batch", {"run_id": rid, **body})
        assert resp.status_code == 400, body
        assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE" and message in resp.json()["message"]
    big = {"run_id": rid, "tags": [{"key": f"k{i}", "value": "v" * 4000} for i in range(100)], "pad": "x" * 700_000}
    resp = mlflow_post(tracking, "runs/log-batch", big)
    assert resp.status_code == 400 and "at most 1000000 bytes" in resp.json()["message"]


def test_unknown_run_is_404(tracking: str) -> None:
    client = MlflowClient()
    missing = uuid.uuid4().hex
    for call in (lambda: client.get_run(missing), lambda: client.log_metric(missing, "m", 1.0),
                 lambda: client.log_param(missing, "p", "v"), lambda: client.get_metric_history(missing, "m")):
        with pytest.raises(MlflowException) as err:
            call()
        assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST" and err.value.get_http_status_code() == 404
    resp = requests.get(f"{tracking}/api/2.0/mlflow/runs/get", params={"run_id": "not-a-run"}, timeout=30)
    assert resp.status_code == 404 and resp.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    resp = requests.get(f"{tracking}/api/2.0/mlflow/no/such/endpoint", timeout=30)
    assert resp.status_code == 404 and resp.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_nested_runs_are_child_runs(tracking: str) -> None:
    name = unique("mlflow-nested")
    mlflow.set_experiment(name)
    with mlflow.start_run(run_name="parent") as parent:
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("m", 1.0)
    parent_id, child_id = (str(uuid.UUID(r.info.run_id)) for r in (parent, child))
    detail = api(tracking, f"/runs/{parent_id}")
    assert detail["children"] == [child_id]
    child_detail = api(tracking, f"/runs/{child_id}")
    assert child_detail["parent_run_id"] == parent_id and child_detail["kind"] == "child"
    top = api(tracking, f"/experiments/{name}/runs", parent="none")
    assert [r["run_id"] for r in top["runs"]] == [parent_id]


def test_experiments(tracking: str) -> None:
    client = MlflowClient()
    assert client.get_experiment("0").name == "Default"
    name = unique("mlflow-exp")
    exp_id = client.create_experiment(name, tags={"owner": "me"})
    for taken in (name, "Default"):
        with pytest.raises(MlflowException) as err:
            client.create_experiment(taken)
        assert err.value.error_code == "RESOURCE_ALREADY_EXISTS"
    resp = mlflow_post(tracking, "experiments/create", {"name": name})
    assert (resp.status_code, resp.json()["error_code"]) == (400, "RESOURCE_ALREADY_EXISTS")  # MLflow's status for it
    mirror = requests.get(f"{tracking}/ajax-api/2.0/mlflow/experiments/get", params={"experiment_id": exp_id}, timeout=30)
    assert mirror.json()["experiment"]["name"] == name
    exp = client.get_experiment_by_name(name)
    assert exp.experiment_id == exp_id and exp.tags == {"owner": "me"} and exp.lifecycle_stage == "active"
    client.set_experiment_tag(exp_id, "stage", "dev")
    renamed = unique("mlflow-exp-renamed")
    client.rename_experiment(exp_id, renamed)
    assert client.get_experiment(exp_id).name == renamed and client.get_experiment(exp_id).tags["stage"] == "dev"
    assert client.get_experiment_by_name(name) is None
    found = client.search_experiments(filter_string=f"name = '{renamed}'")
    assert [e.experiment_id for e in found] == [exp_id]
    assert [e.name for e in client.search_experiments(filter_string="tags.stage = 'dev' and name LIKE 'mlflow-exp-ren%'")
            if e.experiment_id == exp_id] == [renamed]
    client.delete_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "deleted"
    assert exp_id not in [e.experiment_id for e in client.search_experiments()]
    with pytest.raises(MlflowException):
        client.create_run(exp_id)
    client.restore_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "active"
    with pytest.raises(RestException) as err:
        client.get_experiment(uuid.uuid4().hex)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_metric_history_paged_and_bulk_interval(tracking: str) -> None:
    mlflow.set_experiment(unique("mlflow-history"))
    client = MlflowClient()
    with mlflow.start_run() as run:
        rid = run.info.run_id
        client.log_batch(rid, metrics=[Metric("v", float(i % 7), 1_700_000_000_000 + i, i) for i in range(500)])
        client.log_metric(rid, "v", 100.0, step=499, timestamp=1_700_000_000_000)  # same step, earlier time
    latest = client.get_run(rid).data.metrics["v"]
    assert latest == float(499 % 7)  # latest = max step, then max timestamp
    pages, token = [], None
    while True:
        resp = requests.get(f"{tracking}/api/2.0/mlflow/metrics/get-history",
                            params={"run_id": rid, "metric_key": "v", "max_results": 200,
                                    **({"page_token": token} if token else {})}, timeout=30).json()
        pages.append(resp["metrics"])
        token = resp.get("next_page_token")
        if not token:
            break
    assert [len(p) for p in pages] == [200, 200, 101]
    assert [m["step"] for p in pages for m in p][:3] == [0, 1, 2]
    bulk = requests.get(f"{tracking}/api/2.0/mlflow/metrics/get-history-bulk-interval",
                        params={"run_ids": rid, "metric_key": "v", "max_results": 50}, timeout=30).json()["metrics"]
    steps = [m["step"] for m in bulk]
    assert 0 < len(bulk) <= 60 and steps[0] == 0 and steps[-1] == 499 and all(m["run_id"] == rid for m in bulk)


def test_sklearn_autolog_ridge_sweep(tracking: str) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import train_test_split

    name = unique("mlflow-autolog")
    mlflow.set_experiment(name)
    mlflow.sklearn.autolog(log_input_examples=False, log_model_signatures=False, silent=True)
    try:
        X, y = load_diabetes(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
        for alpha in (0.1, 0.5):
            with mlflow.start_run(run_name=f"alpha-{alpha}"):
                Ridge(alpha=alpha).fit(X_train, y_train)
    finally:
        mlflow.sklearn.autolog(disable=True)
    runs = mlflow.search_runs(experiment_names=[name], output_format="list", order_by=["attributes.run_name ASC"])
    assert [r.data.params["alpha"] for r in runs] == ["0.1", "0.5"]
    client = MlflowClient()
    for r in runs:
        assert "training_mean_squared_error" in r.data.metrics and r.data.tags["estimator_name"] == "Ridge"
        assert {"model/MLmodel", "model/model.pkl"} <= {f.path for f in client.list_artifacts(r.info.run_id, "model")}
        assert "mlflow.log-model.history" in r.data.tags
    detail = api(tracking, f"/runs/{uuid.UUID(runs[0].info.run_id)}")
    assert detail["params"]["alpha"] == "0.1" and "training_mean_squared_error" in detail["metrics"]


def test_run_update_delete_restore_tags_and_inputs(tracking: str) -> None:
    name = unique("mlflow-lifecycle")
    exp_id = MlflowClient().create_experiment(name)
    client = MlflowClient()
    run = client.create_run(exp_id, run_name="first", tags={"keep": "1", "drop": "2"})
    rid = run.info.run_id
    assert run.info.status == "RUNNING" and run.data.tags["mlflow.runName"] == "first"
    client.delete_tag(rid, "drop")
    with pytest.raises(MlflowException) as err:
        client.delete_tag(rid, "drop")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.update_run(rid, name="second")
    resp = mlflow_post(tracking, "runs/log-inputs", {"run_id": rid, "datasets": []})
    assert resp.status_code == 200 and resp.json() == {}
    client.set_terminated(rid, status="KILLED", end_time=1_700_000_000_000)
    got = client.get_run(rid)
    assert (got.info.run_name, got.info.status, got.info.end_time) == ("second", "KILLED", 1_700_000_000_000)
    assert got.data.tags == {"keep": "1", "mlflow.runName": "second"}
    detail = api(tracking, f"/runs/{uuid.UUID(rid)}")
    assert (detail["name"], detail["status"]) == ("second", "canceled")

    client.delete_run(rid)
    assert client.get_run(rid).info.lifecycle_stage == "deleted"
    assert client.search_runs([exp_id]) == []
    assert [r.info.run_id for r in client.search_runs([exp_id], run_view_type=2)] == [rid]  # DELETED_ONLY
    assert api(tracking, f"/experiments/{name}/runs")["runs"] == []
    with pytest.raises(MlflowException) as err:
        client.log_metric(rid, "m", 1.0)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    client.restore_run(rid)
    assert [r.info.run_id for r in client.search_runs([exp_id])] == [rid]


def test_artifact_store_is_immutable_and_serves_files_inertly(tracking: str, tmp_path: Path) -> None:
    """The proxied artifact store keeps the security rules of runstream's own uploads: an
    HTML file downloads as an attachment (never rendered in the API's origin), a path
    recorded with other bytes is refused (the victim's file stays), the same bytes again
    are fine, and a control character in a path is a 400 naming it."""
    mlflow.set_experiment(unique("mlflow-art-sec"))
    page = tmp_path / "page.html"
    page.write_text("<script>alert(1)</script>")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(page))
        mlflow.log_artifact(str(page))  # the same bytes again
        info = MlflowClient().get_run(run.info.run_id).info
    store = f"{tracking}/api/2.0/mlflow-artifacts/artifacts/{info.experiment_id}/{info.run_id}/artifacts"
    resp = requests.get(f"{store}/page.html", timeout=30)
    assert resp.status_code == 200 and resp.text == "<script>alert(1)</script>"
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    assert "html" not in resp.headers["Content-Type"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"

    forged = requests.put(f"{store}/page.html", data=b"attacker's bytes", timeout=30)
    assert forged.status_code == 400 and forged.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    assert requests.get(f"{store}/page.html", timeout=30).text == "<script>alert(1)</script>"

    bad = requests.put(f"{store}/evil%1b%5b31mname.txt", data=b"x", timeout=30)  # an ANSI escape
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "control characters" in bad.json()["message"]


def test_a_finished_runs_status_is_final(tracking: str) -> None:
    """MLflow's runs/update on a finished run: the same status again is a no-op, another one is
    refused at once (a 400 naming it) rather than dead-lettered after the answer."""
    mlflow.set_experiment(unique("mlflow-final"))
    with mlflow.start_run() as run:
        mlflow.log_metric("x", 1.0)
    client = MlflowClient()
    client.set_terminated(run.info.run_id, "FINISHED")  # what a second end_run sends
    with pytest.raises(MlflowException) as err:
        client.set_terminated(run.info.run_id, "FAILED")
    assert err.value.error_code == "INVALID_PARAMETER_VALUE" and "already FINISHED" in str(err.value)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
