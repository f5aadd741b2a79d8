"""`runstream chaos --quick --only processor-kill` runs one fault end to end on its own stack.

The harness's figures are printed, not asserted as speeds: this checks that the row is
measured from the database and that a processor SIGKILL + restart loses and duplicates
nothing (the processors store offsets with the rows).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.names import REPO


def test_quick_chaos_row_for_a_processor_kill(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    result = subprocess.run(
        [sys.executable, "-m", "runstream.cli", "chaos", "--quick", "--only", "processor-kill", "--no-write",
         "--state-dir", str(tmp_path / "stack")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| processor-kill")]
    assert len(rows) == 1, result.stdout
    cells = [c.strip() for c in rows[0]]
    sent, stored, lost, duplicated = (int(c.replace(",", "")) for c in cells[1:5])
    assert sent > 0 and (stored, lost, duplicated) == (sent, 0, 0)
    assert cells[8] == "exit 0"


def test_an_unknown_scenario_is_named() -> None:
    result = subprocess.run([sys.executable, "-m", "runstream.cli", "chaos", "--only", "broker-kill,meteor"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown scenario(s) meteor" in result.stderr
