"""`runstream replay` and `runstream bench` hand every argument to their argparse mains."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from runstream.cli import app


@pytest.mark.parametrize(("command", "option"), [("replay", "--no-swap"), ("bench", "--quick")])
def test_help_is_the_mains_own(command: str, option: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert option in result.output


@pytest.mark.parametrize("command", ["replay", "bench"])
def test_unknown_option_is_named_and_refused(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--no-such-option"])
    assert result.exit_code == 2
    assert "--no-such-option" in result.output
