"""`runstream replay`, `bench` and `chaos` hand every argument to their argparse mains
(bench and chaos run benchmarks/ of the checkout in a child process, so these tests run
the real command line)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def runstream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runstream.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("command", "option"), [("replay", "--no-swap"), ("bench", "--quick"), ("chaos", "--only")])
def test_help_is_the_mains_own(command: str, option: str) -> None:
    result = runstream(command, "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert option in result.stdout


@pytest.mark.parametrize("command", ["replay", "bench", "chaos"])
def test_unknown_option_is_named_and_refused(command: str) -> None:
    result = runstream(command, "--no-such-option")
    assert result.returncode == 2
    assert "--no-such-option" in result.stdout + result.stderr
