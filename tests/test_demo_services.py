"""The demo leaves `serve` running for the web UI; `runstream services down` stops it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from typer.testing import CliRunner

from runstream.cli import app
from runstream.devstack.demo import _running, start_background_serve, stop_background_serve, wait_ready
from runstream.devstack.stack import free_ports
from runstream.settings import Settings
from tests.support.names import unique


def test_background_serve_is_found_and_stopped_by_its_pid_file(settings: Settings, tmp_path: Path) -> None:
    api, gateway = free_ports(2)
    name = unique("bg")
    own = replace(settings, api_port=api, gateway_port=gateway, api_url=f"http://127.0.0.1:{api}",
                  ingest_url=f"http://127.0.0.1:{gateway}", topic=name, processor_group=name)
    server = start_background_serve(tmp_path, own)
    wait_ready(own, server)
    assert (tmp_path / "serve.pid").read_text() == str(server.pid)
    stop_background_serve(tmp_path)
    server.wait(30)
    assert not _running(server.pid) and not (tmp_path / "serve.pid").exists()


def test_services_down_with_nothing_running_is_a_no_op(tmp_path: Path) -> None:
    (tmp_path / "serve.pid").write_text("999999")  # a stale pid file from a crashed demo
    result = CliRunner().invoke(app, ["services", "down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "serve.pid").exists()
