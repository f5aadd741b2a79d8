"""A plain ``Workspace()`` / ``Workspace.from_config()`` finds the running local stack
through ``~/.runstream/config.json`` (issue 10 item 4).

Every test runs with a temporary ``$HOME``, no ``RUNSTREAM_*`` setting in the environment
and a temporary current directory: the real ``~/.runstream`` is never read or written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from runstream import Experiment, Run, Workspace, devstack, localstack
from runstream.cli import app
from runstream.errors import RunstreamError
from runstream.settings import ClientSettings, Settings
from tests.support.names import unique

CLIENT_KEYS = ("kafka_bootstrap", "blob_dir", "api_url", "ingest_url")
RECORDED = (*CLIENT_KEYS, "database_url")  # services up records the database too (the SDK ignores it)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh $HOME, no RUNSTREAM_* settings, the cwd a directory outside it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in Settings.env_names():
        monkeypatch.delenv(name, raising=False)
    cwd = tmp_path / "elsewhere" / "deep"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    return home


def record_stack(stack: devstack.StackInfo, services: Settings) -> Path:
    """What ``runstream demo`` records for its stack: here the session's, which runs."""
    return localstack.write(stack.state_dir, {k: getattr(services, k) for k in RECORDED})


def client_view(settings: ClientSettings) -> dict[str, Any]:
    return {k: getattr(settings, k) for k in CLIENT_KEYS}


def test_a_plain_workspace_finds_the_running_local_stack_and_logs_to_it(
        home: Path, stack: devstack.StackInfo, services: Settings) -> None:
    path = record_stack(stack, services)
    assert path == home / ".runstream" / "config.json"
    assert json.loads(path.read_text())["local_stack"] == str(stack.state_dir)
    ws = Workspace.from_config()
    assert client_view(ws.settings) == client_view(services)
    assert client_view(Workspace().settings) == client_view(services)
    try:  # and it really reaches the stack: a run logged through it reads back
        run = Experiment(ws, unique("home-config")).start_logging()
        run.log_list("x", [1, 2, 3])
        run.complete()
        assert Run.get(Workspace(), run.id).get_metrics() == {"x": [1, 2, 3]}
    finally:
        ws.close()


def test_services_up_records_the_stack_and_down_forgets_it(
        home: Path, stack: devstack.StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``services up`` as the command runs it, except that its ``devstack.up`` hands back the
    session's running stack (a second Kafka and PostgreSQL on 9092/5432 would cost a minute
    and may clash with a developer's own); ``down`` is the real command on a stopped stack."""
    monkeypatch.setattr(devstack, "up", lambda state_dir, **_: stack)
    result = CliRunner().invoke(app, ["services", "up", "--state-dir", str(stack.state_dir)])
    assert result.exit_code == 0, result.output
    assert f"export RUNSTREAM_KAFKA_BOOTSTRAP={stack.kafka_bootstrap}" in result.output
    for ws in (Workspace.from_config(), Workspace()):
        assert ws.settings.kafka_bootstrap == stack.kafka_bootstrap  # the database is the services' business

    stopped = tmp_path / "stopped-stack"  # the same record, for a stack `services down` may stop
    localstack.write(stopped, {"kafka_bootstrap": stack.kafka_bootstrap, "database_url": stack.database_url})
    result = CliRunner().invoke(app, ["services", "down", "--state-dir", str(stopped)])
    assert result.exit_code == 0, result.output
    assert not localstack.config_path().exists()
    with pytest.raises(RunstreamError, match="no workspace config found.*no running local stack"):
        Workspace.from_config()
    assert Workspace().settings.kafka_bootstrap == Settings().kafka_bootstrap


def test_the_config_of_a_stack_that_no_longer_runs_is_ignored(home: Path, tmp_path: Path) -> None:
    gone = tmp_path / "crashed-stack"  # e.g. after a reboot: nothing runs there
    localstack.write(gone, {"kafka_bootstrap": "127.0.0.1:1", "api_url": "http://127.0.0.1:2"})
    with pytest.raises(RunstreamError, match=f"no running local stack \\({localstack.config_path()}"):
        Workspace.from_config()
    assert client_view(Workspace().settings) == client_view(Settings())


def test_services_down_forgets_only_its_own_stack(home: Path, tmp_path: Path) -> None:
    localstack.write(tmp_path / "other", {"kafka_bootstrap": "127.0.0.1:1"})
    result = CliRunner().invoke(app, ["services", "down", "--state-dir", str(tmp_path / "mine")])
    assert result.exit_code == 0, result.output
    assert localstack.config_path().exists()
    result = CliRunner().invoke(app, ["services", "down", "--state-dir", str(tmp_path / "other")])
    assert result.exit_code == 0, result.output
    assert not localstack.config_path().exists()


def test_a_later_record_of_the_same_stack_keeps_what_it_does_not_restate(home: Path, tmp_path: Path) -> None:
    localstack.write(tmp_path / "s", {"api_url": "http://127.0.0.1:18080", "kafka_bootstrap": "127.0.0.1:1"})
    localstack.write(tmp_path / "s", {"kafka_bootstrap": "127.0.0.1:3"})  # services up after the demo
    assert json.loads(localstack.config_path().read_text()) == {
        "api_url": "http://127.0.0.1:18080", "kafka_bootstrap": "127.0.0.1:3", "local_stack": str(tmp_path / "s")}
    localstack.write(tmp_path / "t", {"kafka_bootstrap": "127.0.0.1:4"})  # another stack: replaced
    assert json.loads(localstack.config_path().read_text()) == {
        "kafka_bootstrap": "127.0.0.1:4", "local_stack": str(tmp_path / "t")}
    with pytest.raises(ValueError, match=r"not settings: \['colour'\]"):
        localstack.write(tmp_path / "t", {"colour": "blue"})


# ---- the lookup order: explicit path, files upwards from cwd, RUNSTREAM_*, then the home config

def test_the_home_config_is_the_last_fallback(home: Path, stack: devstack.StackInfo, services: Settings,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record_stack(stack, services)
    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps({"api_url": "http://explicit:1"}))
    project = Path.cwd().parent / "runstream.json"  # a project file above the cwd
    project.write_text(json.dumps({"api_url": "http://project:1"}))

    assert Workspace.from_config(explicit).settings.api_url == "http://explicit:1"
    assert Workspace.from_config().settings.api_url == "http://project:1"
    project.unlink()
    monkeypatch.setenv("RUNSTREAM_API_URL", "http://env:1")
    for ws in (Workspace.from_config(), Workspace()):  # the environment, not the home config
        assert ws.settings.api_url == "http://env:1"
        assert ws.settings.kafka_bootstrap == Settings().kafka_bootstrap
    monkeypatch.delenv("RUNSTREAM_API_URL")
    assert Workspace.from_config().settings.api_url == services.api_url
    assert Workspace(url="http://given:1").settings.kafka_bootstrap == Settings().kafka_bootstrap
    assert Workspace(settings=Settings()).settings == Settings()
    assert Workspace(transport="http").settings.kafka_bootstrap == stack.kafka_bootstrap


def test_from_inside_home_the_home_config_is_not_taken_for_a_project_file(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    localstack.write(tmp_path / "crashed-stack", {"api_url": "http://stale:1"})
    inside = home / "projects" / "mnist"
    inside.mkdir(parents=True)
    monkeypatch.chdir(inside)  # walking up reaches ~/.runstream/config.json
    with pytest.raises(RunstreamError, match="no running local stack"):
        Workspace.from_config()


def test_an_unreadable_home_config_is_a_clear_error(home: Path) -> None:
    path = localstack.config_path()
    path.parent.mkdir()
    path.write_text("{not json")
    for make in (Workspace.from_config, Workspace):
        with pytest.raises(RunstreamError, match=f"cannot read the local stack's config {path}"):
            make()
    path.write_text("[1, 2]")
    with pytest.raises(RunstreamError, match="expected a JSON object of settings, found list"):
        Workspace()
