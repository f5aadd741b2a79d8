"""`python -m benchmarks --quick` runs every row end to end on its own small stack.

Numbers are printed by the harness, never asserted here: this only checks that every
row is measured (no row fails) and that the JSON has them all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from tests.support.names import REPO

ROWS = {"ingest_batched", "ingest_single", "ingest_single_drain", "raw_copy", "latency_p50", "latency_p99",
        "vector_p50", "vector_p99", "concurrent", "rebuild", "rebuild_archive", "api_reads"}


def test_quick_benchmark_measures_every_row(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-mlflow", "--state-dir", str(tmp_path / "stack"),
         "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = orjson.loads(out.read_bytes())
    rows = {r["key"]: r for r in doc["rows"]}
    assert ROWS <= rows.keys(), sorted(ROWS - rows.keys())
    assert [k for k in sorted(ROWS) if not (rows[k]["value"] or 0) > 0] == []
    assert rows["concurrent"]["detail"]["count_check"] == "ok"
    assert rows["rebuild"]["detail"]["points_check"] == "ok"
    assert rows["rebuild_archive"]["detail"]["points_check"] == "ok"
    assert [r["key"] for r in doc["rows"] if "machine" not in r["detail"].get("cpu_s", {})] == [], "CPU seconds per row"
    assert doc["meta"]["failures"] == []
    # The latency probe's timeline: the SDK's hook and the processors' trace joined through
    # the archive for every latency row (the pinned ones too), and the SDK workers' CPU.
    latency = [k for k in rows if k.startswith("latency_") and k != "latency_p50"]
    assert {"latency_p99", "latency_0", "latency_0.25", "latency_pinned_0.25", "latency_pinned_0.5"} <= set(latency)
    for key in latency:
        stages = rows[key]["detail"]["stages"]
        assert stages["points"] > 0, key
        assert [s for s in ("enqueue→handed", "handed→acked", "acked→fetched", "fetched→write", "write→committed",
                            "committed→notify", "total") if s not in stages] == [], key
    assert rows["latency_pinned_0.5"]["detail"]["pinned_load_cpus"] == "1"
    assert rows["latency_0.25"]["detail"]["sdk_cpu_us_per_point"] > 0
    assert rows["ingest_batched"]["detail"]["sdk_cpu_us_per_point"] > 0
