"""MLflow's tracking server on the same box, as the baseline of SPEC §9.

``mlflow server`` runs on 127.0.0.1 with its backend store in a separate database
(``mlflow``) of the benchmark's PostgreSQL; :mod:`benchmarks.mlflow_client` logs and reads
through ``MlflowClient``. :func:`measure_runstream` runs the same client, unchanged, against
runstream's own MLflow API (the stack's query API URL), and :func:`compat_rows` sets the
two side by side (issue 12's row). mlflow is an optional extra (``pip install -e '.[bench]'``);
it can also live in another virtualenv, given with ``--mlflow-python``. When it cannot
run, the row says exactly why.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
from typing import Any

import orjson
import psycopg

from benchmarks.results import Row
from benchmarks.services import REPO, wait_http
from benchmarks.workloads import Bench
from runstream.devstack.stack import free_ports


def interpreter(given: str | None) -> tuple[str | None, str]:
    """The python that has mlflow, or (None, why not)."""
    if given:
        check = subprocess.run([given, "-c", "import mlflow, psycopg"], capture_output=True, text=True)
        if check.returncode != 0:
            return None, f"{given} cannot import mlflow and psycopg: {check.stderr.strip().splitlines()[-1:]}"
        return given, ""
    if importlib.util.find_spec("mlflow") is None:
        return None, "mlflow is not installed in this environment (pip install -e '.[bench]', or --mlflow-python)"
    return sys.executable, ""


def _driver(python: str) -> str:
    """SQLAlchemy's dialect for mlflow server: psycopg2 when that interpreter has it (mlflow
    2's queries compare integer ids with string parameters, which the psycopg 3 dialect
    casts to VARCHAR and PostgreSQL refuses), else psycopg 3 (what mlflow 3 works with)."""
    check = subprocess.run([python, "-c", "import psycopg2"], capture_output=True)
    return "postgresql+psycopg2" if check.returncode == 0 else "postgresql+psycopg"


async def measure(b: Bench, given: str | None) -> dict[str, Any]:
    python, why = interpreter(given)
    if python is None:
        return {"skipped": why}
    s = b.settings
    base = s.database_url.rsplit("/", 1)[0]
    with psycopg.connect(s.database_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'mlflow'").fetchone() is None:
            conn.execute("CREATE DATABASE mlflow")
    (port,) = free_ports(1)
    log = (b.services.state_dir / "mlflow-server.log").open("ab")
    server = subprocess.Popen(
        [python, "-m", "mlflow", "server", "--backend-store-uri", f"{base.replace('postgresql', _driver(python))}/mlflow",
         "--default-artifact-root", str(b.services.state_dir / "mlflow-artifacts"),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=b.services.state_dir)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_http, f"{url}/health", server, 180)
        return await _client(b, python, url)
    except RuntimeError as exc:
        return {"skipped": f"mlflow server did not start: {exc} (log: {b.services.state_dir / 'mlflow-server.log'})"}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server's own process group (its workers)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)


async def _client(b: Bench, python: str, url: str) -> dict[str, Any]:
    """:mod:`benchmarks.mlflow_client`'s workload against the tracking server at ``url``."""
    proc = await asyncio.create_subprocess_exec(
        python, "-m", "benchmarks.mlflow_client", url, "--runs", str(b.sizes.batched_procs * b.sizes.batched_runs),
        "--points", str(b.sizes.mlflow_points), "--history", str(b.sizes.mlflow_history),
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        return {"skipped": f"the MLflow client failed ({proc.returncode}): {err.decode()[-500:]}"}
    return dict(orjson.loads(out))


async def measure_runstream(b: Bench, given: str | None) -> dict[str, Any]:
    """The same MLflow client workload, pointed at runstream's MLflow API (the query API)."""
    python, why = interpreter(given)
    if python is None:
        return {"skipped": why}
    return await _client(b, python, b.settings.api_url)


def compat_rows(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> list[Row]:
    """The stock MLflow client into runstream vs into ``mlflow server``, and the ratios."""
    if ours is None or "skipped" in ours:
        why = "failed; see the output above" if ours is None else f"not measured: {ours['skipped']}"
        return [Row("mlflow_compat", "MLflow client into runstream", None, "", note=why)]
    ingest = ours["points"] / ours["ingest_seconds"]
    out = [
        Row("mlflow_compat_ingest", f"MLflow client log_batch into runstream (1,000/call, {ours['threads']} threads)",
            ingest, "points/s", detail=ours),
        Row("mlflow_compat_history_read", f"MLflow client get_metric_history from runstream, "
            f"{ours['history_points']:,} points", ours["history_read_seconds"], "s", higher_is_better=False),
    ]
    if theirs is None or "skipped" in theirs:
        out[0].note = "mlflow server not measured: " + ("failed" if theirs is None else theirs["skipped"])
        return out
    out[0].ratio, out[0].baseline = ingest / (theirs["points"] / theirs["ingest_seconds"]), "mlflow server"
    out[1].ratio = theirs["history_read_seconds"] / ours["history_read_seconds"]
    out[1].baseline = "faster than mlflow server"
    return out


def rows(ml: dict[str, Any] | None, batched: Row | None, read: Row | None, vector: Row | None) -> list[Row]:
    """MLflow's rows, and the ratios of ours to theirs (``read``: our read of a history of
    the same length, ``vector``: our downsampled 1M-point chart)."""
    if ml is None:
        return [Row("mlflow", "MLflow baseline", None, "", note="failed; see the output above")]
    if "skipped" in ml:
        return [Row("mlflow", "MLflow baseline", None, "", note=f"not measured: {ml['skipped']}")]
    ingest = ml["points"] / ml["ingest_seconds"]
    out = [Row("mlflow_ingest", f"MLflow {ml['version']} log_batch ingest (1,000/call, {ml['threads']} threads)",
               ingest, "points/s", detail=ml)]
    if batched is not None and batched.value:
        out.append(Row("ingest_vs_mlflow", "our batched ingest ÷ MLflow's", batched.value / ingest, "×",
                       target=30, baseline="MLflow", ratio=batched.value / ingest))
    history_rate = ml["history_points"] / ml["history_ingest_seconds"]
    out.append(Row("mlflow_history_ingest", f"MLflow: log the {ml['history_points']:,}-point history", history_rate,
                   "points/s", detail=ml))
    out.append(Row("mlflow_history_read", f"MLflow get_metric_history, {ml['history_points']:,} points",
                   ml["history_read_seconds"], "s", higher_is_better=False))
    if read is not None and read.value:
        read.ratio, read.baseline = ml["history_read_seconds"] / read.value, "faster than MLflow"
    if vector is not None and vector.value:
        vector.ratio = ml["history_read_seconds"] * 1000 / vector.value
        vector.baseline = f"faster than MLflow reading {ml['history_points']:,}"
    return out
