"""The SDK degrades, never fails: Kafka or the gateway unreachable never stops a script and never loses a point.

Every script here is a real subprocess; "unreachable" is a closed port, a gateway this test
started and SIGKILLs, or none started yet. What the SDK could not deliver is in the outbox
(``RUNSTREAM_SPOOL_DIR``, the offline spool's format) and ``runstream sync`` delivers it
exactly once; what it could is checked in PostgreSQL (the archive, the points, the run).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psutil
import pytest

from runstream import Experiment, Workspace
from runstream.devstack.stack import free_ports
from runstream.schemas.blobs import blob_path
from runstream.sender import POINT, Sender
from runstream.settings import Settings
from runstream.spool import EVENTS_FILE
from tests.support.names import unique
from tests.support.services import stop
from tests.support.waiting import wait_for

UNREACHABLE = "is unreachable"
T = TypeVar("T")


def closed_port() -> int:
    """A port nothing listens on (free_ports binds and releases it)."""
    return free_ports(1)[0]


def script_env(settings: Settings, **overrides: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    return {**env, **replace(settings, **overrides).to_env()}  # type: ignore[arg-type]


def run_script(tmp_path: Path, body: str, env: dict[str, str], *args: str,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


def sync_cli(settings: Settings, path: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "runstream.cli", "sync", str(path)],
                          env=script_env(settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def outbox_events(spool: Path, run_id: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (spool / run_id / EVENTS_FILE).read_bytes().splitlines()]


def archive(db: Any, run_id: str) -> list[tuple[int, int]]:
    """(seq, copies) of the run's archived events."""
    return db.execute("SELECT seq, count(*) FROM events WHERE run_id = %s GROUP BY seq ORDER BY seq",
                      (run_id,)).fetchall()


def first_delivery_order(db: Any, run_id: str) -> list[int]:
    """The run's seqs in the order Kafka got their first copy (the archive keeps that one)."""
    return [r[0] for r in db.execute('SELECT seq FROM events WHERE run_id = %s ORDER BY partition, "offset"',
                                     (run_id,)).fetchall()]


def points(db: Any, run_id: str, name: str) -> list[tuple[int, float]]:
    return db.execute("SELECT step, value FROM metric_points WHERE run_id = %s AND name = %s ORDER BY step",
                      (run_id, name)).fetchall()


def run_row(db: Any, run_id: str) -> tuple[str, int] | None:
    return db.execute("SELECT status, last_seq FROM runs WHERE run_id = %s", (run_id,)).fetchone()


def completed(db: Any, run_id: str, timeout: float = 60) -> tuple[str, int]:
    """Wait until the run is materialized as completed; its (status, last_seq)."""

    def check() -> tuple[str, int] | None:
        row = run_row(db, run_id)
        return row if row is not None and row[0] == "completed" else None

    row = wait_for(check, timeout=timeout, what=f"run {run_id} completed")
    assert row is not None
    return row


LOGGING_SCRIPT = """
    import sys, time
    from runstream import Experiment, Workspace

    n = int(sys.argv[1])
    run = Experiment(Workspace(), sys.argv[2]).start_logging(lr=0.1)
    print(run.id, flush=True)
    for i in range(n):
        run.log("loss", i * 0.5)
    for i in range(3):
        run.log_row("table", x=i, y=i * 2)
    run.tag("phase", "done")
    run.upload_file("outputs/model.bin", bytes(range(256)))
    started = time.monotonic()
    if sys.argv[3] == "complete":
        run.complete()
    print(f"complete {time.monotonic() - started:.1f}", flush=True)
"""


def test_kafka_unreachable_from_the_start(services: Settings, db: Any, tmp_path: Path) -> None:
    """start_logging, log, tag, upload_file and complete return; complete waits at most the
    delivery timeout; one warning; every event is in the outbox; two syncs deliver each once."""
    spool, n = tmp_path / "outbox", 20_000
    env = script_env(services, kafka_bootstrap=f"127.0.0.1:{closed_port()}", spool_dir=str(spool),
                     delivery_timeout=3)
    started = time.monotonic()
    done = run_script(tmp_path, LOGGING_SCRIPT, env, str(n), unique("unreachable"), "complete")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    run_id, waited = done.stdout.split("\n")[0], float(done.stdout.split()[-1])
    assert waited < 3 + 5 and elapsed < 60, done.stdout  # complete() gave up after the 3 s timeout
    assert done.stderr.count(UNREACHABLE) == 1, done.stderr
    assert f"runstream sync {spool}" in done.stderr
    assert len(done.stderr.splitlines()) <= 3, done.stderr  # unreachable, complete() gave up, exit: no per-retry lines

    events = outbox_events(spool, run_id)
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[-1]["payload"] == {"status": "completed"}

    first = sync_cli(services, spool)
    assert f"sent {len(events)} event(s)" in first
    wait_for(lambda: run_row(db, run_id) == ("completed", len(events) - 1), what="the synced run")
    second = sync_cli(services, spool)
    assert "sent 0 event(s)" in second and f"{len(events)} event(s) were already synced" in second
    assert archive(db, run_id) == [(seq, 1) for seq in range(len(events))]
    assert points(db, run_id, "loss") == [(i, i * 0.5) for i in range(n)]
    assert db.execute("SELECT count(*) FROM table_rows WHERE run_id = %s", (run_id,)).fetchone()[0] == 3
    assert db.execute("SELECT path FROM artifacts WHERE run_id = %s", (run_id,)).fetchall() == [("outputs/model.bin",)]


def test_interpreter_exit_with_kafka_down_drops_nothing(services: Settings, db: Any, tmp_path: Path) -> None:
    """No complete(): at exit everything unsent is in the outbox (none dropped), then synced."""
    spool, n = tmp_path / "outbox", 10_000
    env = script_env(services, kafka_bootstrap=f"127.0.0.1:{closed_port()}", spool_dir=str(spool),
                     delivery_timeout=2)
    done = run_script(tmp_path, LOGGING_SCRIPT, env, str(n), unique("exit"), "no")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split("\n")[0]
    assert "were not delivered before the sender stopped" in done.stderr and f"runstream sync {spool}" in done.stderr
    events = outbox_events(spool, run_id)
    assert [e["seq"] for e in events] == list(range(len(events)))
    logged = sum(len(s["steps"]) for e in events if e["type"] == "metric.points" for s in e["payload"]["series"])
    assert logged == n
    sync_cli(services, spool)
    wait_for(lambda: len(points(db, run_id, "loss")) == n, what="the synced points")
    assert points(db, run_id, "loss") == [(i, i * 0.5) for i in range(n)]


GATEWAY_SCRIPT = """
    import sys, time
    from pathlib import Path
    from runstream import Experiment, Workspace

    signals = Path(sys.argv[1])

    def phase(name):
        (signals / name).touch()
        while not (signals / (name + ".go")).exists():  # the test moves the gateway meanwhile
            time.sleep(0.02)

    n = 0
    def log(count):
        global n
        for _ in range(count):
            run.log("loss", n * 0.25)
            n += 1

    run = Experiment(Workspace(), sys.argv[2]).start_logging()
    print(run.id, flush=True)
    log(5000)
    run.upload_file("outputs/early.bin", b"logged while the gateway was down")
    phase("down-at-start")
    log(5000)
    phase("up")
    log(5000)
    run.upload_file("outputs/late.bin", b"logged while the gateway was killed")
    phase("killed")
    log(5000)
    run.complete()
    print(n, flush=True)
"""


def start_gateway(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own descriptor
        process = subprocess.Popen([sys.executable, "-m", "runstream.cli", "gateway"], env=script_env(settings),
                                   stdout=out, stderr=subprocess.STDOUT)

    def ready() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"{settings.ingest_url}/api/v1/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_for(ready, timeout=60, what="the gateway")
    return process


def test_gateway_down_while_an_http_script_logs(services: Settings, db: Any, tmp_path: Path) -> None:
    """Down when the run starts, then up, then SIGKILLed mid-run, then up again: every point
    once, in order (the run ends completed with the right last seq), both artifacts stored."""
    port = closed_port()
    gateway = replace(services, transport="http", gateway_port=port, ingest_url=f"http://127.0.0.1:{port}")
    signals = tmp_path / "signals"
    signals.mkdir()
    env = script_env(gateway, spool_dir=str(tmp_path / "outbox"), delivery_timeout=60)
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(GATEWAY_SCRIPT))
    proc = subprocess.Popen([sys.executable, str(script), str(signals), unique("gateway-down")], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "gateway.log"
    server: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: (signals / "down-at-start").exists() or proc.poll() is not None, what="phase 1")
        server = start_gateway(gateway, log)
        (signals / "down-at-start.go").touch()
        wait_for(lambda: (signals / "up").exists() or proc.poll() is not None, what="phase 2")
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        (signals / "up.go").touch()
        wait_for(lambda: (signals / "killed").exists() or proc.poll() is not None, what="phase 3")
        server = start_gateway(gateway, log)
        (signals / "killed.go").touch()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        if server is not None:
            stop(server)
    assert proc.returncode == 0, err
    run_id, total = out.split()
    assert int(total) == 20_000
    assert err.count(UNREACHABLE) <= 2, err  # once per outage
    row = completed(db, run_id)
    seqs = archive(db, run_id)
    assert seqs == [(seq, 1) for seq in range(row[1] + 1)]
    assert first_delivery_order(db, run_id) == list(range(row[1] + 1))
    assert points(db, run_id, "loss") == [(i, i * 0.25) for i in range(20_000)]
    files = db.execute("SELECT path FROM artifacts WHERE run_id = %s ORDER BY path", (run_id,)).fetchall()
    assert files == [("outputs/early.bin",), ("outputs/late.bin",)]
    assert not list((tmp_path / "outbox").glob(f"{run_id}/{EVENTS_FILE}")), "a delivered outbox folder is removed"


MEMORY_SCRIPT = """
    import sys
    import psutil
    from runstream import Experiment, Workspace

    proc = psutil.Process()
    run = Experiment(Workspace(), "memory").start_logging()
    for i in range(200_000):  # warm-up: imports, the sender, the outbox file
        run.log("loss", i * 0.5)
    base = peak = proc.memory_info().rss
    for i in range(int(sys.argv[1])):
        run.log("loss", i * 0.5)
        if i % 50_000 == 0:
            peak = max(peak, proc.memory_info().rss)
    peak = max(peak, proc.memory_info().rss)
    print(base, peak, flush=True)
"""


def test_memory_stays_bounded_during_an_outage(services: Settings, tmp_path: Path) -> None:
    """1M points logged flat out against a closed port with an 8 MiB budget: RSS grows by less
    than three budgets (it grew about 44 MB per million points before the outbox)."""
    budget = 8 * 1024 * 1024
    env = script_env(services, kafka_bootstrap=f"127.0.0.1:{closed_port()}", spool_dir=str(tmp_path / "outbox"),
                     memory_budget_bytes=budget, delivery_timeout=1)
    done = run_script(tmp_path, MEMORY_SCRIPT, env, "1000000", timeout=300)
    assert done.returncode == 0, done.stderr
    base, peak = map(int, done.stdout.split())
    assert peak - base < 3 * budget, f"RSS grew {(peak - base) / 2**20:.1f} MiB"
    assert done.stderr.count(UNREACHABLE) == 1, done.stderr


def test_over_budget_runs_go_through_the_outbox_in_order(services: Settings, db: Any, tmp_path: Path) -> None:
    """Kafka up but a 64 KiB budget: events spill to the outbox and come back, per run in order."""
    settings = replace(services, memory_budget_bytes=64 * 1024, spool_dir=str(tmp_path / "outbox"))
    ws = Workspace(settings=settings)
    try:
        exp = Experiment(ws, unique("budget"))
        runs = [exp.start_logging() for _ in range(3)]
        for i in range(30_000):
            for run in runs:
                run.log("loss", i * 0.5)
        for run in runs:
            run.complete()
    finally:
        ws.close()
    for run in runs:
        row = completed(db, run.id)
        assert row[1] == run._seq - 1
        assert archive(db, run.id) == [(seq, 1) for seq in range(run._seq)]
        assert first_delivery_order(db, run.id) == list(range(run._seq))
        assert points(db, run.id, "loss") == [(i, i * 0.5) for i in range(30_000)]
    assert not list((tmp_path / "outbox").glob(f"*/{EVENTS_FILE}")), "every outbox folder was delivered and removed"


def test_a_run_spooled_mid_fold_keeps_its_earlier_events_ahead(services: Settings, tmp_path: Path) -> None:
    """One fold where a run's first events fit the memory budget and a later one does not:
    the earlier ones go to the outbox ahead of it instead of travelling in memory, where the
    outbox's drain could overtake them (CI once archived a run as seq 1, 2, 0, 3, ...)."""
    settings = replace(services, kafka_bootstrap=f"127.0.0.1:{closed_port()}", spool_dir=str(tmp_path / "outbox"))
    sender = Sender(settings)
    try:
        def route() -> tuple[list[tuple[str, bytes]], list[bytes]]:
            # The closed port may already have failed the transport's start (then everything
            # goes to disk): this test is about the budget, so the service counts as up.
            sender._down = False
            sender._event_budget = 250
            folded = [("a", b"a0" * 50), ("b", b"b0" * 50), ("a", b"a1" * 50), ("a", b"a2" * 50), ("b", b"b1" * 50)]
            sender._route(folded)  # a0 and b0 fit in memory, a1 is over budget: run a is spooled
            in_memory = [event for batch in sender._mem for event in batch.events]
            outbox = sender._outbox["a"]
            outbox.flush()
            return in_memory, (outbox.dir / EVENTS_FILE).read_bytes().splitlines()

        in_memory, spooled = asyncio.run_coroutine_threadsafe(_call(route), sender._loop).result(10)
    finally:
        sender.close(timeout=0)
    assert spooled == [b"a0" * 50, b"a1" * 50, b"a2" * 50], "run a's events, all in the outbox, in order"
    assert in_memory == [("b", b"b0" * 50), ("b", b"b1" * 50)], "run b still fits in memory"


async def _call(fn: Callable[[], T]) -> T:
    return fn()  # on the sender's loop, with no await: no other task of the sender runs meanwhile


def test_an_event_that_cannot_be_encoded_is_contained(workspace: Workspace, db: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A value orjson cannot encode (it slipped past the call's checks) costs only itself:
    reported once naming the run; its neighbours, the run's later events and other runs flow."""
    exp = Experiment(workspace, unique("encode"))
    bad, good = exp.start_logging(), exp.start_logging()
    with caplog.at_level(logging.ERROR, logger="runstream.sender"):
        for i in range(100):
            bad.log("x", float(i))
            good.log("x", float(i))
        for i in range(2):  # queued as a log() call would, minus its checks
            bad._sink.put(bad, (POINT, "x", 100 + i, 2**64, time.time(), None))
        for i in range(100, 200):
            bad.log("x", float(i))
            good.log("x", float(i))
        bad.complete()
        good.complete()
    reports = [r.getMessage() for r in caplog.records if "could not be encoded" in r.getMessage()]
    assert len(reports) == 1 and bad.id in reports[0], reports
    for run in (bad, good):
        completed(db, run.id)
        assert archive(db, run.id) == [(seq, 1) for seq in range(run._seq)]  # no seq gap
    assert [v for _, v in points(db, good.id, "x")] == [float(i) for i in range(200)]
    assert points(db, bad.id, "x") == [(i, float(i)) for i in range(200)]  # the two bad points took steps 100, 101 ...
    # ... that log() then assigned again (the direct put skipped log's step counter): 200 distinct steps



PAUSE_SCRIPT = """
    import sys, time
    from pathlib import Path
    import psutil
    from runstream import Experiment, Workspace

    signals = Path(sys.argv[1])
    run = Experiment(Workspace(), sys.argv[2]).start_logging()
    print(run.id, flush=True)
    for i in range(10_000):
        run.log("loss", i * 0.5)
    run.flush()
    (signals / "delivered").touch()
    while not (signals / "paused").exists():  # the test SIGSTOPs the broker meanwhile
        time.sleep(0.02)
    proc = psutil.Process()
    base = peak = proc.memory_info().rss
    for i in range(10_000, int(sys.argv[3])):
        run.log("loss", i * 0.5)
        if i % 50_000 == 0:
            peak = max(peak, proc.memory_info().rss)
    peak = max(peak, proc.memory_info().rss)
    started = time.monotonic()
    run.complete()
    print(base, peak, f"{time.monotonic() - started:.1f}", flush=True)
"""


def broker_process(bootstrap: str) -> psutil.Process:
    """The Kafka broker listening on the first bootstrap address."""
    port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise AssertionError(f"no process listens on {bootstrap}")


def test_broker_paused_when_the_run_completes(services: Settings, db: Any, tmp_path: Path) -> None:
    """The broker SIGSTOPped mid-run: 1.2M points logged into the pause stay within a 4 MiB
    budget (memory, then the outbox); complete() returns after the delivery timeout (it
    blocked past 150 s before) and exit adds no wait; sync delivers the rest once, in order."""
    signals, spool, n, budget = tmp_path / "signals", tmp_path / "outbox", 1_200_000, 4 * 1024 * 1024
    signals.mkdir()
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(PAUSE_SCRIPT))
    env = script_env(services, spool_dir=str(spool), delivery_timeout=4, memory_budget_bytes=budget)
    proc = subprocess.Popen([sys.executable, str(script), str(signals), unique("paused"), str(n)], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    broker = broker_process(services.kafka_bootstrap)
    try:
        wait_for(lambda: (signals / "delivered").exists() or proc.poll() is not None, what="the first half")
        broker.suspend()
        (signals / "paused").touch()
        out, err = proc.communicate(timeout=180)
    finally:
        broker.resume()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    run_id, base, peak, waited = out.split()
    assert float(waited) < 4 + 5, out
    # The budget (events, and queued calls), aiokafka's copies of what a paused broker left in
    # flight (up to a 1 MiB batch per partition, raw and compressed) and the allocator's slack:
    # a constant. Unbounded, 1.2M points would have grown it by about 50 MiB (44 MB per million).
    assert int(peak) - int(base) < 3 * budget + 16 * 2**20, f"RSS grew {(int(peak) - int(base)) / 2**20:.1f} MiB"
    assert f"runstream sync {spool}" in err, err
    sync_cli(services, spool)
    row = completed(db, run_id, timeout=120)
    assert archive(db, run_id) == [(seq, 1) for seq in range(row[1] + 1)]
    assert first_delivery_order(db, run_id) == list(range(row[1] + 1))
    assert points(db, run_id, "loss") == [(i, i * 0.5) for i in range(n)]


def test_an_undeliverable_outbox_is_parked_and_holds_up_nothing(services: Settings, db: Any, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A run whose outbox cannot be delivered (here its artifact bytes were removed) is left
    for `runstream sync` with one error; the other runs' outboxes drain, the sender does not
    take it for an outage (a later run is delivered straight away), and once the cause is
    fixed `runstream sync` delivers it."""
    port = closed_port()
    gateway = replace(services, transport="http", gateway_port=port, ingest_url=f"http://127.0.0.1:{port}",
                      spool_dir=str(tmp_path / "outbox"), delivery_timeout=3)
    ws = Workspace(settings=gateway)
    experiment = Experiment(ws, unique("parked"))
    broken, fine = experiment.start_logging(), experiment.start_logging()
    data = os.urandom(4096)
    broken.upload_file("outputs/model.bin", data)  # the gateway is down: the bytes go to the outbox
    for i in range(100):
        broken.log("loss", i)
        fine.log("loss", i)
    broken.flush(timeout=0.5)
    fine.flush(timeout=0.5)
    sha = hashlib.sha256(data).hexdigest()
    kept = blob_path(tmp_path / "outbox" / broken.id / "blobs", sha)
    assert kept.is_file()
    hidden = kept.with_name("hidden")
    kept.rename(hidden)  # the artifact's bytes are gone: this outbox cannot be delivered
    server = start_gateway(gateway, tmp_path / "gateway.log")
    try:
        with caplog.at_level(logging.ERROR, logger="runstream.sender"):
            wait_for(lambda: len(points(db, fine.id, "loss")) == 100, timeout=60, what="the other run's outbox")
            later = experiment.start_logging()
            later.log("loss", 1.0)
            later.complete()
            assert run_row(db, later.id) == ("completed", 2)  # delivered, not spilled: the sender is not "down"
            fine.complete()
            broken.complete()  # returns after delivery_timeout, its events kept on disk
            ws.close()
        parked = [r.getMessage() for r in caplog.records if "cannot be delivered" in r.getMessage()]
        assert len(parked) == 1 and broken.id in parked[0] and "runstream sync" in parked[0]
        assert run_row(db, broken.id) is None
        hidden.rename(kept)  # the cause fixed
        sync_cli(gateway, tmp_path / "outbox")
        assert points(db, broken.id, "loss") == [(i, float(i)) for i in range(100)]
        assert completed(db, broken.id)[0] == "completed"
    finally:
        stop(server)
