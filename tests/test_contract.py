"""The contract package (``schemas/``) and its three readers kept in step.

* Every route of the running query API answers what its OpenAPI document (generated from
  ``schemas.api``) says, for real data logged through the SDK and for errors.
* ``ui/src/contract.ts`` is what the generator makes of the contract today.
* ``schemas`` imports nothing else of ours (import-linter's contract in pyproject.toml).
* The small contract functions: terminal statuses, blob layout, NOTIFY payloads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from runstream import Experiment, Workspace
from runstream.schemas import blobs, events, notify
from runstream.schemas.typescript import typescript
from tests.support.names import unique

REPO = Path(__file__).resolve().parent.parent
CONTRACT_TS = REPO / "ui" / "src" / "contract.ts"
EVENT_SCHEMA = json.loads((REPO / "schemas" / "json" / "events.schema.json").read_text())


# ---------------------------------------------------------------- pure contract


def test_terminal_statuses_are_the_statuses_but_running() -> None:
    assert events.STATUSES == {"running", "completed", "failed", "canceled"}
    assert events.TERMINAL_STATUSES == events.STATUSES - {"running"}


def test_blob_path_is_the_fan_out_layout_and_refuses_what_is_no_sha256(tmp_path: Path) -> None:
    sha = "ab" + "cd" + "0" * 60
    assert blobs.blob_path(tmp_path, sha) == tmp_path / "ab" / "cd" / sha
    for bad in ["../../etc/passwd", "AB" + "0" * 62, "ab" * 31, ""]:
        with pytest.raises(ValueError, match="not a blob address"):
            blobs.blob_path(tmp_path, bad)


def test_notify_payloads_round_trip_and_bad_ones_are_named() -> None:
    run_id = uuid.uuid4()
    assert notify.parse(notify.run_payload(run_id, 42)) == (run_id, 42)
    assert notify.parse(notify.run_payload(str(run_id), 0)) == (run_id, 0)
    assert notify.parse(notify.ANY) is None
    for bad in ["", "x", f"{run_id}", f"{run_id} x", "not-a-uuid 3"]:
        with pytest.raises(ValueError, match=notify.CHANNEL):
            notify.parse(bad)


def test_checked_in_typescript_is_the_generated_one() -> None:
    assert CONTRACT_TS.read_text() == typescript(), "run `runstream schema --ts` and commit ui/src/contract.ts"


def test_the_ui_takes_its_types_from_the_generated_file() -> None:
    declared = re.compile(r"^(?:export )?(?:interface|type|const) (\w+)", re.M)
    contract = set(declared.findall(typescript()))
    assert {"Run", "RunDetail", "Value", "Vector", "STATUSES", "TERMINAL_STATUSES"} <= contract
    for source in (REPO / "ui" / "src").rglob("*.ts"):
        if source != CONTRACT_TS:
            text = source.read_text()
            assert not contract & set(declared.findall(text)), f"{source.name} re-declares a contract type"
    assert 'export type * from "./contract"' in (REPO / "ui" / "src" / "api.ts").read_text()


def test_schemas_imports_nothing_else_of_ours() -> None:
    done = subprocess.run(["bash", str(REPO / "scripts" / "lint-imports.sh")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "BIN": str(Path(sys.executable).parent)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and "KEPT" in done.stdout, done.stdout


# ---------------------------------------------------------------- real answers vs the document


class Document:
    """The API's own OpenAPI document, and a record of which routes were checked."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.checked: set[str] = set()
        self.registry = {"components": doc["components"]}

    def validate(self, template: str, status: int, body: Any, method: str = "get") -> None:
        response = self.doc["paths"][template][method]["responses"][str(status)]
        self.validate_schema(response["content"]["application/json"]["schema"], body, f"{template} {status}")
        self.checked.add(template)

    def validate_schema(self, schema: dict[str, Any], body: Any, what: str) -> None:
        validator = jsonschema.Draft202012Validator({**schema, **self.registry},
                                                    format_checker=jsonschema.FormatChecker())
        errors = list(validator.iter_errors(body))
        assert not errors, f"{what}: {[e.message[:300] for e in errors]}"


async def _get(session: aiohttp.ClientSession, api: str, path: str, params: Any = None,
               status: int = 200) -> Any:
    async with session.get(api + path, params=params) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json()


def _log_everything(ws: Workspace, experiment: str, image: Path) -> tuple[Any, Any]:
    """A parent with every kind of metric, a file, tags and a child; both finished."""
    parent = Experiment(ws, experiment).start_logging(name="parent", lr=0.1, odd=float("nan"), note="x")
    parent.log("once", 3)
    parent.log("word", "hi")
    for v in [0.5, float("nan"), float("inf"), 0.25]:
        parent.log("loss", v)
    parent.log_list("acc", [0.1, 0.2, True])
    parent.log_row("tbl", a=1, b="x")
    parent.log_row("tbl", a=2.5)
    parent.log_image("img", path=image)
    parent.upload_file("outputs/model.bin", b"weights")
    parent.tag("team", "a")
    parent.tag("flag")
    child = parent.child_run(name="child")
    child.log("loss", 1.0)
    child.complete()
    parent.complete()
    parent.flush()
    return parent, child


async def _sse(session: aiohttp.ClientSession, url: str, params: dict[str, str]) -> list[tuple[str, str]]:
    """(event, data) of every message of a live stream, until it closes after ``end``."""
    messages: list[tuple[str, str]] = []
    event, data = "message", []
    async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=60)) as resp:
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if not line:
                if data:
                    messages.append((event, "\n".join(data)))
                event, data = "message", []
            elif line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
    return messages


async def test_every_route_answers_as_its_openapi_document_says(
    workspace: Workspace, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    api = workspace.settings.api_url
    experiment = unique("contract")
    image = tmp_path / "img.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")  # log_image goes by the extension; the bytes are opaque here
    parent, child = _log_everything(workspace, experiment, image)
    wait = {"min_seq": str(parent._seq - 1)}
    doc = Document(await _get(session, api, "/api/openapi.json"))
    doc.checked.add("/api/openapi.json")
    run = f"/api/runs/{parent.id}"
    # Both runs materialized up to their last event before anything is listed.
    await _get(session, api, f"/api/runs/{child.id}", {"min_seq": str(child._seq - 1)})
    detail = await _get(session, api, run, wait)

    doc.validate("/api/health", 200, await _get(session, api, "/api/health"))
    doc.validate("/api/ready", 200, await _get(session, api, "/api/ready"))
    listed = await _get(session, api, "/api/experiments")
    assert experiment in [e["name"] for e in listed["experiments"]]
    doc.validate("/api/experiments", 200, listed)
    runs_path = f"/api/experiments/{experiment}/runs"
    for params in [{}, {"parent": "none", "columns": "loss"}, {"status": "completed", "order_by": "metric:loss"}]:
        doc.validate("/api/experiments/{name}/runs", 200, await _get(session, api, runs_path, params))

    assert detail["children"] == [child.id] and detail["status"] == "completed"
    doc.validate("/api/runs/{run_id}", 200, detail)
    doc.validate("/api/runs/{run_id}", 200, await _get(session, api, run, {"as_of_seq": "3"}))

    metrics = await _get(session, api, f"{run}/metrics", wait)
    assert set(metrics) == {"once", "word", "loss", "acc", "tbl", "img"}
    for params in [wait, {"recursive": "true"}, {"as_of_seq": "3"}, {"name": "img"}]:
        doc.validate("/api/runs/{run_id}/metrics", 200, await _get(session, api, f"{run}/metrics", params))
    for name, params in [("loss", {}), ("acc", {"max_points": "4"}), ("word", {})]:
        doc.validate("/api/runs/{run_id}/metrics/{name}", 200,
                     await _get(session, api, f"{run}/metrics/{name}", params))
    doc.validate("/api/runs/{run_id}/tables/{name}", 200, await _get(session, api, f"{run}/tables/tbl"))

    files = await _get(session, api, f"{run}/files")
    doc.validate("/api/runs/{run_id}/files", 200, files)
    async with session.get(f"{api}{run}/files/outputs/model.bin") as resp:
        assert resp.status == 200 and await resp.read() == b"weights"
        assert "application/octet-stream" in doc.doc["paths"]["/api/runs/{run_id}/files/{path}"]["get"][
            "responses"]["200"]["content"]
    doc.checked.add("/api/runs/{run_id}/files/{path}")

    page = await _get(session, api, f"{run}/events", {"limit": "5"})
    doc.validate("/api/runs/{run_id}/events", 200, page)
    history = await _get(session, api, f"{run}/history", {"limit": "50"})
    assert history["entries"] and all(e["summary"] for e in history["entries"])
    doc.validate("/api/runs/{run_id}/history", 200, history)
    doc.validate("/api/runs/{run_id}/history", 400,
                 await _get(session, api, f"{run}/history", {"type": "run.nope"}, status=400))
    for event in page["events"]:
        jsonschema.validate(event, EVENT_SCHEMA)
    doc.validate("/api/runs/{run_id}/logs", 200, await _get(session, api, f"{run}/logs"))

    messages = await _sse(session, f"{api}{run}/live", {})
    assert messages[-1][0] == "end"
    for event, data in messages:
        ref = "LiveEnd" if event == "end" else "RunEvent"
        doc.validate_schema({"$ref": f"#/components/schemas/{ref}"}, json.loads(data), f"live {event}")
    doc.checked.add("/api/runs/{run_id}/live")

    searched = await _get(session, api, "/api/runs", {"experiments": experiment, "filter": 'tags.team = "a"'})
    assert [r["run_id"] for r in searched["runs"]] == [parent.id]
    doc.validate("/api/runs", 200, searched)
    doc.validate("/api/runs", 400, await _get(session, api, "/api/runs", {"filter": "tags.team ="}, status=400))
    doc.validate("/api/runs", 404, await _get(session, api, "/api/runs", {"experiments": unique("none")}, status=404))

    for params in [{"run": f"{parent.id},{child.id}"}, {"run": parent.id, "vectors": "true", "metric": "loss"}]:
        doc.validate("/api/compare", 200, await _get(session, api, "/api/compare", params))

    groups = await _get(session, api, f"/api/experiments/{experiment}/groups", {"name": "loss", "group_by": "tag:team"})
    assert [g["group"] for g in groups["groups"]] == ["a", None]
    doc.validate("/api/experiments/{name}/groups", 200, groups)
    doc.validate("/api/experiments/{name}/groups", 400,
                 await _get(session, api, f"/api/experiments/{experiment}/groups", status=400))
    for path, params in [(f"/api/experiments/{experiment}/runs.csv", {"filter": 'tags.team = "a"'}),
                         (f"{run}/metrics.csv", {"name": "loss"})]:
        async with session.get(api + path, params=params) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
            assert (await resp.text()).count("\n") == 2 if path.endswith("runs.csv") else 5
    assert "text/csv" in doc.doc["paths"]["/api/runs/{run_id}/metrics.csv"]["get"]["responses"]["200"]["content"]
    doc.checked.update({"/api/experiments/{name}/runs.csv", "/api/runs/{run_id}/metrics.csv"})

    # Errors: the shapes the document gives for them.
    missing = f"/api/runs/{uuid.uuid4()}"
    doc.validate("/api/runs/{run_id}", 404, await _get(session, api, missing, status=404))
    doc.validate("/api/runs/{run_id}", 400, await _get(session, api, "/api/runs/x", status=400))
    doc.validate("/api/runs/{run_id}/metrics", 400,
                 await _get(session, api, f"{run}/metrics", {"recursive": "maybe"}, status=400))
    doc.validate("/api/experiments/{name}/runs", 404,
                 await _get(session, api, f"/api/experiments/{unique('none')}/runs", status=404))
    doc.validate("/api/compare", 400, await _get(session, api, "/api/compare", status=400))

    # Run management: each write answers the run's detail.
    other = Experiment(workspace, experiment).start_logging(name="managed")
    other.complete()
    async with session.patch(f"{api}/api/runs/{other.id}", json={"name": "renamed", "note": "n", "tags": {"t": "1"}}) as resp:
        doc.validate("/api/runs/{run_id}", 200, await resp.json(), "patch")
    async with session.patch(f"{api}/api/runs/{other.id}", json={"colour": "red"}) as resp:
        doc.validate("/api/runs/{run_id}", 400, await resp.json(), "patch")
    for action in ("delete", "restore"):
        async with session.post(f"{api}/api/runs/{other.id}/{action}") as resp:
            doc.validate(f"/api/runs/{{run_id}}/{action}", 200, await resp.json(), "post")
        async with session.post(f"{api}{missing}/{action}") as resp:
            doc.validate(f"/api/runs/{{run_id}}/{action}", 404, await resp.json(), "post")
    doc.validate("/api/runs", 200, await _get(session, api, "/api/runs", {"experiments": experiment, "deleted": "only"}))
    # Who am I, and the UI's login/logout (this stack runs with authentication off: test_auth has it on).
    doc.validate("/api/whoami", 200, await _get(session, api, "/api/whoami"))
    async with session.post(api + "/api/login", json={"token": "anything"}) as resp:
        doc.validate("/api/login", resp.status, await resp.json(), "post")
    async with session.post(api + "/api/login", data=b"[]") as resp:
        assert resp.status == 400
        doc.validate("/api/login", 400, await resp.json(), "post")
    async with session.post(api + "/api/logout") as resp:
        doc.validate("/api/logout", resp.status, await resp.json(), "post")

    assert doc.checked == set(doc.doc["paths"]), f"routes not checked: {set(doc.doc['paths']) - doc.checked}"


def test_the_metrics_answers_are_told_apart_by_their_parameters_not_their_shape() -> None:
    """The three metrics answers are an anyOf: an empty run's ``{}`` is each of them, so a
    oneOf (what the document said before) rejected the API's own answers."""
    from runstream.query_api import openapi

    doc = openapi.document()
    schema = doc["paths"]["/api/runs/{run_id}/metrics"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"]
    assert "oneOf" not in schema and len(schema["anyOf"]) == 3
    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate({})


async def test_the_gateway_refuses_blob_addresses_that_are_no_sha256(
    workspace: Workspace, session: aiohttp.ClientSession
) -> None:
    """Both blob routes check the address before it becomes a path in the store (a 400,
    not a lookup of some other file)."""
    blobs_url = f"{workspace.settings.ingest_url.rstrip('/')}/api/v1/blobs"
    for bad in ["AB" + "0" * 62, "ab" * 31, "x" * 64, "0" * 63 + "-"]:
        async with session.head(f"{blobs_url}/{bad}") as resp:
            assert resp.status == 400, bad
        async with session.put(f"{blobs_url}/{bad}", data=b"x") as resp:
            assert resp.status == 400 and "not a lowercase hex sha256" in (await resp.json())["error"]["message"]
    async with session.head(f"{blobs_url}/{'0' * 64}") as resp:
        assert resp.status == 404
