"""Run management in the web UI (issue 13 item 6), in headless Chromium against the real
services: rename, tags, note, delete and restore from the run page; the experiment page's
"Deleted runs" view; deleting several selected runs with progress and per-run errors.
Each change is an event: the API's history lists it and ``as_of`` shows the run before it.

Screenshots go to each test's tmp dir with a copy in test-output/ui/manage-*.png.
"""

from __future__ import annotations

import shutil
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.sync_api import expect

from runstream import Experiment, Workspace
from runstream.schemas.events import NOTE_TAG, SERVER_SEQ_BASE
from runstream.settings import Settings
from tests.support.names import REPO, unique
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

SHOTS = REPO / "test-output" / "ui"
XSS = "<img src=x onerror=alert(1)>"


def shot(el: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    el.screenshot(path=str(path))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / f"manage-{name}.png")
    return path


def api_get(settings: Settings, path: str, **params: Any) -> Any:
    query = urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(f"{settings.api_url}{path}?{query}", timeout=30) as resp:
        return orjson.loads(resp.read())


def completed_runs(workspace: Workspace, settings: Settings, experiment: str, names: list[str]) -> list[str]:
    """Start and complete one run per name; return their ids once the API shows them all."""
    ids = []
    for name in names:
        run = Experiment(workspace, experiment).start_logging(name=name)
        run.log("loss", 1.0)
        run.complete()
        ids.append(run.id)
    wait_for(lambda: api_get(settings, f"/api/experiments/{experiment}/runs", status="completed")["total"] == len(names),
             what="the runs")
    return ids


def listed(settings: Settings, experiment: str, **params: Any) -> set[str]:
    page = api_get(settings, f"/api/experiments/{experiment}/runs", limit=1000, **params)
    return {r["run_id"] for r in page["runs"]}


def test_rename_tags_note_delete_restore_from_the_ui_are_events(ui_page: Any, workspace: Workspace,
                                                                 services: Settings, tmp_path: Path) -> None:
    page = ui_page
    experiment = unique("ui-manage")
    run_id, other = completed_runs(workspace, services, experiment, ["before", "other"])
    initial = api_get(services, f"/api/runs/{run_id}")
    page.goto(f"/runs/{run_id}")
    title = page.locator("#run-head h1")
    expect(title).to_have_text("before")

    # rename: a name the contract refuses is a 400 shown next to the control, then a good one
    page.click("#rename-button")
    page.fill("#rename-input", "n" * 300)
    page.press("#rename-input", "Enter")
    error = page.locator("#rename-error")
    expect(error).to_be_visible()
    assert "(400)" in error.inner_text() and "name" in error.inner_text()
    page.fill("#rename-input", "after")
    page.press("#rename-input", "Enter")
    expect(title).to_have_text("after")
    expect(error).to_be_hidden()
    assert page.title().startswith("after")

    # tags: add, change (click the chip), add one holding markup, remove
    page.fill("#tag-key", "team")
    page.fill("#tag-value", "a")
    page.click("#tag-set")
    team = page.locator("#tags .tag[data-tag-key='team']")
    expect(team).to_have_text("team: a")
    team.click()
    assert page.input_value("#tag-key") == "team"
    page.fill("#tag-value", "b")
    page.press("#tag-value", "Enter")
    expect(team).to_have_text("team: b")
    page.fill("#tag-key", "html")
    page.fill("#tag-value", XSS)
    page.click("#tag-set")
    expect(page.locator("#tags .tag[data-tag-key='html']")).to_have_text(f"html: {XSS}")
    page.click("#tags [data-remove-tag='team']")
    expect(team).to_have_count(0)

    # the note: plain text (markup shown as characters, line breaks kept), not a tag chip
    page.click("#note-edit")
    note = f"first line\n{XSS}"
    page.fill("#note-input", note)
    page.click("#note-save")
    expect(page.locator("#note")).to_have_text(note)
    assert page.locator("#note").evaluate("el => el.innerText") == note
    assert page.locator(f"#tags .tag[data-tag-key='{NOTE_TAG}']").count() == 0
    assert page.evaluate("document.querySelectorAll('#run-head img, #run-head b b').length") == 0
    detail = api_get(services, f"/api/runs/{run_id}")
    assert detail["name"] == "after" and detail["tags"] == {**initial["tags"], "html": XSS, NOTE_TAG: note}
    shot(page.locator("#run-head"), tmp_path, "run-edited")

    # delete, after a confirmation; the page says the run is deleted
    page.click("#delete-run")
    expect(page.locator("#delete-confirm")).to_be_visible()
    shot(page.locator("#run-head"), tmp_path, "run-delete-confirm")
    page.click("#delete-confirm-yes")
    expect(page.locator("#deleted-banner")).to_be_visible()
    expect(page.locator("#run-deleted")).to_have_text("deleted")
    expect(page.locator("#delete-run")).to_be_hidden()
    shot(page.locator("#run-head"), tmp_path, "run-deleted")
    assert api_get(services, f"/api/runs/{run_id}")["deleted"] is True

    # gone from the runs table; in "Deleted runs" (kept in the URL); restored from there
    page.goto(f"/experiments/{experiment}")
    expect(page.locator(f"#runs tr[data-run-id='{other}']")).to_have_count(1)
    expect(page.locator(f"#runs tr[data-run-id='{run_id}']")).to_have_count(0)
    assert page.get_attribute("#runs-total", "data-total") == "1"
    page.click("#deleted-toggle")
    expect(page.locator(f"#runs tr[data-run-id='{run_id}']")).to_have_count(1)
    assert "deleted=only" in page.url
    expect(page.locator(f"#runs tr[data-run-id='{other}']")).to_have_count(0)
    expect(page.locator(f"#runs tr[data-run-id='{run_id}'] .tag[data-tag-key='html']")).to_have_text(f"html: {XSS}")
    note_chip = page.locator(f"#runs tr[data-run-id='{run_id}'] .tag[data-tag-key='{NOTE_TAG}']")
    assert note_chip.inner_text() == "note: first line…" and note_chip.get_attribute("title") == note
    shot(page.locator("main"), tmp_path, "deleted-runs")
    page.reload()  # the view survives a reload
    page.click(f"#runs [data-restore='{run_id}']")
    expect(page.locator("#bulk-progress")).to_have_text("Restored 1 of 1 run.")
    expect(page.locator(f"#runs tr[data-run-id='{run_id}']")).to_have_count(0)
    page.click("#deleted-toggle")
    expect(page.locator(f"#runs tr[data-run-id='{run_id}']")).to_have_count(1)
    assert "deleted=only" not in page.url and listed(services, experiment) == {run_id, other}

    # the run page's History has a readable line for each change
    page.goto(f"/runs/{run_id}")
    events = page.locator("#events")
    expect(events.locator("tr[data-type='run.restored'] summary")).to_have_text("restored")
    assert events.locator("tr[data-type='run.renamed'] summary").inner_text() == "renamed to “after”"
    assert events.locator("tr[data-type='run.deleted'] summary").inner_text() == "deleted (hidden from the runs lists)"
    assert events.locator("tr[data-type='tag.removed'] summary").inner_text() == "tag team removed"
    assert events.locator("tr[data-type='tag.set'] summary").all_inner_texts()[-4:] == [
        "tag team = a", "tag team = b", f"tag html = {XSS}", f"note set: first line ({len(note)} characters)"]
    shot(page.locator("#events-section"), tmp_path, "history")

    # the API: each change is an event in the history (with its principal: none on a local
    # stack), and as_of shows the run as it was before each
    entries = api_get(services, f"/api/runs/{run_id}/history", limit=1000)["entries"]
    changes = [e for e in entries if e["seq"] >= SERVER_SEQ_BASE]  # the events the query API wrote
    assert [(e["type"], e["summary"]) for e in changes] == [
        ("run.renamed", "renamed to 'after'"),
        ("tag.set", "tag 'team' = 'a'"), ("tag.set", "tag 'team' = 'b'"), ("tag.set", f"tag 'html' = {XSS!r}"),
        ("tag.removed", "tag 'team' removed"), ("tag.set", f"note set to {note!r}"),
        ("run.deleted", "deleted (hidden from the runs lists; restorable)"), ("run.restored", "restored")]
    assert all(e["principal"] is None for e in changes)
    at = {e["type"]: datetime.fromisoformat(e["ts"]) for e in changes}
    just_before = (at["run.renamed"] - timedelta(milliseconds=1)).isoformat()
    old = api_get(services, f"/api/runs/{run_id}", as_of=just_before)
    assert old["name"] == "before" and old["tags"] == initial["tags"] and old["deleted"] is False
    while_deleted = api_get(services, f"/api/runs/{run_id}", as_of=at["run.deleted"].isoformat())
    assert while_deleted["name"] == "after" and while_deleted["deleted"] is True
    assert while_deleted["tags"] == {**initial["tags"], "html": XSS, NOTE_TAG: note}
    assert api_get(services, f"/api/runs/{run_id}")["deleted"] is False


def test_delete_selected_runs_shows_progress_and_each_failure(ui_page: Any, workspace: Workspace, services: Settings,
                                                              tmp_path: Path, console_allowed: list[str]) -> None:
    page = ui_page
    experiment = unique("ui-bulk")
    r1, r2, r3 = completed_runs(workspace, services, experiment, ["one", "two", "three"])
    page.goto(f"/experiments/{experiment}")
    for rid in (r1, r2):
        page.check(f"#runs tr[data-run-id='{rid}'] td.select input")
    # r2's request fails in the network (the API never sees it): its error is listed
    console_allowed.append("ERR_CONNECTION_REFUSED")
    page.route(f"**/api/runs/{r2}/delete", lambda route: route.abort("connectionrefused"))
    page.click("#delete-selected")
    expect(page.locator("#delete-selected-confirm")).to_contain_text("Delete 2 runs?")
    page.click("#delete-selected-yes")
    status = page.locator("#bulk-status[data-state='failed']")
    expect(status.locator("#bulk-progress")).to_have_text("Deleted 1 of 2 runs; 1 failed: See deleted runs")
    failure = status.locator(f"#bulk-errors li[data-run-id='{r2}']")
    expect(failure).to_contain_text("two: No answer (network)")
    expect(page.locator(f"#runs tr[data-run-id='{r1}']")).to_have_count(0)
    expect(page.locator("#selection-bar")).to_contain_text("1 selected: two")
    shot(page.locator("main"), tmp_path, "bulk-delete-failure")
    assert listed(services, experiment) == {r2, r3} and listed(services, experiment, deleted="only") == {r1}

    # again without the fault: the one left is deleted
    page.unroute(f"**/api/runs/{r2}/delete")
    page.click("#delete-selected")
    page.click("#delete-selected-yes")
    expect(page.locator("#bulk-status[data-state='done'] #bulk-progress")).to_have_text(
        "Deleted 1 of 1 run. See deleted runs")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    assert listed(services, experiment, deleted="only") == {r1, r2}

    # "Deleted runs" by its link; restore both selected
    page.click("#bulk-progress a")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    for rid in (r1, r2):
        page.check(f"#runs tr[data-run-id='{rid}'] td.select input")
    shot(page.locator("main"), tmp_path, "deleted-runs-selected")
    page.click("#restore-selected")
    expect(page.locator("#bulk-progress")).to_have_text("Restored 2 of 2 runs.")
    expect(page.locator("#runs tbody tr")).to_have_count(0)
    assert listed(services, experiment) == {r1, r2, r3}


def test_changes_to_a_running_run_keep_its_live_updates(ui_page: Any, workspace: Workspace,
                                                        services: Settings) -> None:
    """The API numbers its events from 2**62 while the SDK keeps numbering its own: after a
    change from the page, the SDK's next events still arrive live and each shows once."""
    page = ui_page
    run = Experiment(workspace, unique("ui-manage-live")).start_logging(name="live")
    run.log("loss", 1.0)
    run.log("loss", 0.5)
    run.get_metrics()
    page.goto(f"/runs/{run.id}")
    page.locator("#live[data-state='open']").wait_for()
    page.fill("#tag-key", "reviewed")
    page.fill("#tag-value", "yes")
    page.click("#tag-set")
    expect(page.locator("#tags .tag[data-tag-key='reviewed']")).to_have_text("reviewed: yes")
    page.click("#rename-button")
    page.fill("#rename-input", "live renamed")
    page.press("#rename-input", "Enter")
    expect(page.locator("#run-head h1")).to_have_text("live renamed")

    run.log("loss", 0.25)
    run.tag("phase", "eval")
    run.flush()
    expect(page.locator("#tags .tag[data-tag-key='phase']")).to_have_text("phase: eval")
    expect(page.locator("#charts .chart[data-metric='loss'][data-points='3']")).to_have_count(1)
    events = page.locator("#events")
    expect(events.locator("tr[data-type='tag.set']")).to_have_count(2)
    expect(events.locator("tr[data-type='run.renamed']")).to_have_count(1)
    assert events.locator("tr[data-type='run.renamed'] summary").inner_text() == "renamed to “live renamed”"
    run.complete()
    expect(page.locator("#run-status [data-status='completed']")).to_have_count(1)
    assert page.locator("#run-head h1").inner_text() == "live renamed"
