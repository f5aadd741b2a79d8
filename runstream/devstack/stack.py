"""Start, stop and describe the development stack: Kafka (one broker, or a cluster) and PostgreSQL.

State lives in one directory: ``stack.json`` (pids, ports, urls, one entry per broker in
``brokers``; written as each service starts, so ``down`` works from another process and
after a crash), ``env`` (KEY=VALUE lines), ``server.properties``, ``kafka.log``,
``kafka-data/`` (broker 1; brokers 2.. use ``server-N.properties``, ``kafka-N.log``,
``kafka-data-N/``) and ``pg/`` (the PostgreSQL cluster).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runstream.devstack import kafka, kafka_sasl, postgres
from runstream.devstack.kafka_sasl import Credentials
from runstream.settings import ServiceSettings

log = logging.getLogger("runstream.devstack")
READY_TIMEOUT_S = 120.0
POLL_S = 0.2
_children: list[subprocess.Popen[bytes]] = []  # keeps our Popen objects alive (no ResourceWarning)


class DevstackError(RuntimeError):
    """A service did not start, with the tail of its log in the message."""


@dataclass(frozen=True)
class StackInfo:
    """Where the running services answer."""

    state_dir: Path
    kafka_bootstrap: str
    database_url: str
    brokers: int = 1
    """Kafka brokers in the cluster (each a combined broker + controller node)."""
    sasl: Credentials | None = None
    """The SCRAM users' passwords when Kafka authenticates clients (``up(sasl=True)``)."""
    api_database_url: str = ""
    """The query API's read-only role (``runstream_reader``); empty for a stack recorded before it existed."""

    def env(self) -> dict[str, str]:
        """The ``RUNSTREAM_*`` variables pointing the services at this stack (with SASL: as
        the service user; :meth:`sdk_env` is a training script's)."""
        env = {"RUNSTREAM_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "RUNSTREAM_DATABASE_URL": self.database_url}
        if self.api_database_url:
            env["RUNSTREAM_API_DATABASE_URL"] = self.api_database_url
        return {**env, **(self.sasl.env(kafka_sasl.SERVICE) if self.sasl else {})}

    def sdk_env(self) -> dict[str, str]:
        """What a training script producing straight to Kafka needs (with SASL: the SDK user)."""
        env = {"RUNSTREAM_KAFKA_BOOTSTRAP": self.kafka_bootstrap}
        return {**env, **(self.sasl.env(kafka_sasl.SDK) if self.sasl else {})}

    def admin_security(self) -> dict[str, str]:
        """aiokafka arguments of the stack's super user (none without SASL)."""
        return self.sasl.client_args(kafka_sasl.ADMIN) if self.sasl else {}


# ---------------------------------------------------------------- pure helpers

def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago (all bound at once, then released)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def render_env(env: dict[str, str], *, export: bool = False) -> str:
    """``KEY=VALUE`` lines (shell-quoted, optionally prefixed with ``export``)."""
    prefix = "export " if export else ""
    return "".join(f"{prefix}{k}={shlex.quote(v)}\n" for k, v in env.items())


def default_state_dir() -> Path:
    """``$RUNSTREAM_STATE_DIR`` or ``./.state/stack``."""
    return Path(os.environ.get("RUNSTREAM_STATE_DIR") or Path.cwd() / ".state" / "stack")


# ---------------------------------------------------------------- processes

def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _alive(pid: int) -> bool:
    try:  # reap it if it is our own exited child, so it does not linger as a zombie
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _pids(match: Callable[[list[str]], bool], hint: int | None = None) -> set[int]:
    """Running pids whose command line satisfies ``match`` (the ``hint`` pid and a /proc scan)."""
    found = {hint} if hint and _alive(hint) and match(_cmdline(hint)) else set()
    proc = Path("/proc")
    if proc.is_dir():
        found |= {int(p.name) for p in proc.iterdir() if p.name.isdigit() and match(_cmdline(int(p.name)))}
    return {p for p in found if p != os.getpid() and _alive(p)}


def _wait_until(cond: Callable[[], bool], deadline: float) -> bool:
    """Poll ``cond`` every POLL_S seconds until it holds (True) or ``deadline`` passes (False)."""
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


def _terminate(pid: int, first: int, grace_s: float, last: int = signal.SIGKILL) -> None:
    for sig, wait_s in ((first, grace_s), (last, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_until(lambda: not _alive(pid), time.monotonic() + wait_s):
            return
    log.warning("pid %d did not exit", pid)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


# ---------------------------------------------------------------- state files

def _paths(state_dir: Path) -> dict[str, Path]:
    return {"json": state_dir / "stack.json", "env": state_dir / "env", "props": state_dir / "server.properties",
            "kafka_log": state_dir / "kafka.log", "kafka_data": state_dir / "kafka-data"}


def _node_paths(state_dir: Path, node_id: int) -> dict[str, Path]:
    """Properties, log and data directory of broker ``node_id`` (node 1 keeps the one-broker names)."""
    suffix = "" if node_id == 1 else f"-{node_id}"
    return {"props": state_dir / f"server{suffix}.properties", "log": state_dir / f"kafka{suffix}.log",
            "data": state_dir / f"kafka-data{suffix}"}


def _all_props(state_dir: Path) -> list[Path]:
    """Every broker properties file the state dir may have (also of an earlier, larger cluster)."""
    return [_paths(state_dir)["props"], *sorted(state_dir.glob("server-*.properties"))]


def _load(state_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(_paths(state_dir)["json"].read_text()))
    except (OSError, ValueError):
        return {}


def _save(state_dir: Path, record: dict[str, Any]) -> None:
    path = _paths(state_dir)["json"]
    tmp = path.with_suffix(".json.tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:  # it holds passwords
        out.write(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def _broker_pids(state_dir: Path, record: dict[str, Any], node_id: int) -> set[int]:
    props = _node_paths(state_dir, node_id)["props"]
    hint = next((b.get("pid") for b in _brokers(record) if b["node_id"] == node_id), None)
    return _pids(lambda a: kafka.is_broker_cmdline(a, props), hint)


def _kafka_pids(state_dir: Path, record: dict[str, Any]) -> set[int]:
    """Every running broker of the state dir (found by its properties file; the record may be gone)."""
    props = _all_props(state_dir)
    return _pids(lambda a: any(kafka.is_broker_cmdline(a, p) for p in props))


def _brokers(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's brokers (a record written before clusters existed has only ``kafka``)."""
    if "brokers" in record:
        return list(record["brokers"])
    return [{"node_id": 1, **record["kafka"]}] if "kafka" in record else []


def _pg_roots(state_dir: Path, record: dict[str, Any]) -> Iterator[Path]:
    recorded = record.get("postgres", {}).get("root")
    yield from dict.fromkeys([*([Path(recorded)] if recorded else []), *postgres.candidate_roots(state_dir)])


def _pg_pids(data_dir: Path, hint: int | None) -> set[int]:
    return _pids(lambda a: postgres.is_postmaster_cmdline(a, data_dir), hint or postgres.postmaster_pid(data_dir))


# ---------------------------------------------------------------- public API

def read_info(state_dir: Path) -> StackInfo | None:
    """The stack recorded in ``state_dir`` if it finished starting and both processes still run."""
    state_dir = Path(state_dir).resolve()
    rec = _load(state_dir)
    if not rec.get("ready"):
        return None
    pg_data = Path(rec["postgres"]["root"]) / "data"
    nodes = [b["node_id"] for b in _brokers(rec)]
    if not all(_broker_pids(state_dir, rec, n) for n in nodes) or not _pg_pids(pg_data, rec["postgres"].get("pid")):
        return None
    return StackInfo(state_dir, rec["kafka_bootstrap"], rec["database_url"], len(nodes), _sasl(rec),
                     rec.get("api_database_url", ""))


def _sasl(record: dict[str, Any]) -> Credentials | None:
    return Credentials.from_record(record["sasl"]) if record.get("sasl") else None


def _admin_args(record: dict[str, Any]) -> dict[str, str] | None:
    creds = _sasl(record)
    return creds.client_args(kafka_sasl.ADMIN) if creds else None


def broker_status(state_dir: Path) -> list[dict[str, Any]]:
    """Each recorded broker: ``node_id``, ``port``, ``controller_port``, ``pid`` (None when
    it is not running) and ``log``."""
    state_dir = Path(state_dir).resolve()
    rec = _load(state_dir)
    out = []
    for b in _brokers(rec):
        pids = _broker_pids(state_dir, rec, b["node_id"])
        out.append({**b, "pid": min(pids) if pids else None})
    return out


def start_broker(state_dir: Path, node_id: int, *, timeout_s: float = READY_TIMEOUT_S) -> int:
    """Start broker ``node_id`` of the stack again on its kept data (after a crash or a
    kill); returns its pid once it answers a metadata request. A running one is left alone."""
    state_dir = Path(state_dir).resolve()
    rec = _load(state_dir)
    brokers = _brokers(rec)
    entry = next((b for b in brokers if b["node_id"] == node_id), None)
    if entry is None:
        raise DevstackError(f"no broker {node_id} in {state_dir} (brokers: {[b['node_id'] for b in brokers]})")
    if running := _broker_pids(state_dir, rec, node_id):
        return min(running)
    paths = _node_paths(state_dir, node_id)
    heap = kafka.HEAP if len(brokers) == 1 else kafka.CLUSTER_HEAP
    proc = kafka.start(kafka.resolve_jars(), paths["props"], paths["log"], heap=heap)
    _children.append(proc)
    entry["pid"] = proc.pid
    rec["brokers"] = [entry if b["node_id"] == node_id else b for b in brokers]
    if node_id == 1:
        rec.setdefault("kafka", {})["pid"] = proc.pid
    _save(state_dir, rec)
    if not _wait_until(lambda: proc.poll() is not None or kafka.probe(entry["port"], 1, _admin_args(rec)),
                       time.monotonic() + timeout_s):
        raise DevstackError(f"broker {node_id} did not answer in {timeout_s} s\n{_tail(paths['log'])}")
    if proc.returncode is not None:
        raise DevstackError(f"broker {node_id} exited with {proc.returncode}\n{_tail(paths['log'])}")
    return proc.pid


def down(state_dir: Path) -> None:
    """Stop the stack of ``state_dir``: SIGTERM Kafka (SIGKILL after 20 s), ``pg_ctl stop -m fast``.

    Idempotent. Also finds processes of a crashed earlier run by their command line
    (the broker's ``server.properties`` / the postmaster's data directory), so a reused
    pid of an unrelated process is never signalled.
    """
    state_dir = Path(state_dir).resolve()
    rec = _load(state_dir)
    brokers = sorted(_kafka_pids(state_dir, rec))
    if brokers:  # all at once: one by one, the last nodes of a cluster wait for a lost quorum
        log.info("stopping kafka (pid %s)", ",".join(map(str, brokers)))
        with ThreadPoolExecutor(len(brokers)) as pool:
            list(pool.map(lambda pid: _terminate(pid, signal.SIGTERM, 20.0), brokers))
    for root in _pg_roots(state_dir, rec):
        data_dir = root / "data"
        pids = _pg_pids(data_dir, rec.get("postgres", {}).get("pid"))
        if not pids:
            continue
        log.info("stopping postgres (pid %s)", ",".join(map(str, sorted(pids))))
        try:
            postgres.stop(postgres.find_bin_dir(), data_dir)
        except RuntimeError as exc:  # binaries gone: signal the postmaster directly
            log.warning("pg_ctl stop: %s", exc)
        for pid in _pg_pids(data_dir, None):
            _terminate(pid, signal.SIGINT, 30.0, signal.SIGQUIT)  # SIGINT = fast shutdown
    for key in ("json", "env"):
        _paths(state_dir)[key].unlink(missing_ok=True)


def _wipe(state_dir: Path) -> None:
    for data in [_paths(state_dir)["kafka_data"], *state_dir.glob("kafka-data-*")]:
        shutil.rmtree(data, ignore_errors=True)
    for root in postgres.candidate_roots(state_dir):
        shutil.rmtree(root, ignore_errors=True)
    for log_file in [_paths(state_dir)["kafka_log"], *state_dir.glob("kafka-*.log")]:
        log_file.unlink(missing_ok=True)
    for props in _all_props(state_dir)[1:]:
        props.unlink(missing_ok=True)


def _pick_ports(state_dir: Path, kafka_port: int | None, pg_port: int | None,
                brokers: int = 1) -> tuple[list[tuple[int, int]], int]:
    """(broker port, controller port) per node, and the PostgreSQL port."""
    spare = free_ports(2 * brokers + 1)
    for name, port in (("kafka", kafka_port), ("postgres", pg_port)):
        if port is not None and not port_is_free(port):
            raise DevstackError(f"{name} port 127.0.0.1:{port} is in use (state dir {state_dir})")
    spare = [p for p in spare if p not in (kafka_port, pg_port)]
    nodes = [(kafka_port or spare.pop(), spare.pop())] + [(spare.pop(), spare.pop()) for _ in range(brokers - 1)]
    return nodes, pg_port or spare.pop()


def up(state_dir: Path, *, kafka_port: int | None = None, pg_port: int | None = None,
       fresh: bool = True, brokers: int = 1, sasl: bool = False) -> StackInfo:
    """Start Kafka and PostgreSQL for ``state_dir`` and return where they answer.

    ``brokers`` Kafka nodes (each a broker and a controller; 3 make a 3-voter quorum that
    survives losing one node) listen on loopback; ``kafka_port`` is the first node's.
    ``None`` ports pick free loopback ports. A stack already running in ``state_dir`` is
    stopped first when ``fresh`` (then the data dirs are wiped); with ``fresh=False`` a
    running, healthy stack is reused as is when the requested ports and broker count
    match, otherwise it is restarted on its existing data. Waits up to 120 s for every
    service; on failure prints the service's log tail, stops what was started and raises
    :class:`DevstackError`. ``sasl``: Kafka authenticates every client with SCRAM and
    authorizes it with ACLs (:mod:`runstream.devstack.kafka_sasl`): the returned info's
    ``env()`` is the services' user, ``sdk_env()`` a producer's that may only write events.
    """
    if brokers < 1:
        raise DevstackError(f"brokers must be at least 1, not {brokers}")
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if not fresh and (info := read_info(state_dir)) is not None:
        old = _load(state_dir)
        k_old, p_old = old["kafka"]["port"], old["postgres"]["port"]
        if kafka_port in (None, k_old) and pg_port in (None, p_old) and info.brokers == brokers \
                and (info.sasl is not None) == sasl \
                and kafka.probe(k_old, brokers, info.admin_security()) and postgres.probe(info.database_url):
            log.info("reusing the running stack in %s", state_dir)
            return info
    kept = _sasl(_load(state_dir)) if not fresh else None  # SCRAM users live in the kept metadata
    if sasl and not fresh and kept is None and kafka.existing_cluster_id(_paths(state_dir)["kafka_data"]):
        raise DevstackError("the kept Kafka data was formatted without SASL users; start it fresh for --sasl")
    down(state_dir)
    if fresh:
        _wipe(state_dir)
    t0 = time.monotonic()
    try:
        jars = kafka.resolve_jars()
        bin_dir = postgres.find_bin_dir()
    except RuntimeError as exc:
        raise DevstackError(str(exc)) from exc
    log.info("kafka jars ready in %.1fs", time.monotonic() - t0)
    nodes, p_port = _pick_ports(state_dir, kafka_port, pg_port, brokers)
    voters = {i: c for i, (_, c) in enumerate(nodes, start=1)}
    entries: list[dict[str, Any]] = [{"node_id": i, "port": k, "controller_port": c, **{key: str(path) for key, path in
                                                                  _node_paths(state_dir, i).items()}}
               for i, (k, c) in enumerate(nodes, start=1)]
    k_port, c_port = nodes[0]
    paths = _paths(state_dir)
    creds = (kept or Credentials.generate()) if sasl else None
    record: dict[str, Any] = {"state_dir": str(state_dir), "ready": False,
                              "kafka_bootstrap": ",".join(f"127.0.0.1:{k}" for k, _ in nodes),
                              "kafka": {"port": k_port, "controller_port": c_port, "log": str(paths["kafka_log"])},
                              "brokers": entries, "sasl": creds.to_record() if creds else None}
    deadline = time.monotonic() + READY_TIMEOUT_S
    current_log = paths["kafka_log"]
    formats: list[subprocess.Popen[bytes]] = []
    try:
        # Every node of a cluster must be formatted with the same cluster id.
        cluster_id = kafka.existing_cluster_id(paths["kafka_data"]) or kafka.random_cluster_id()
        for entry in entries:
            node = _node_paths(state_dir, entry["node_id"])
            node["data"].mkdir(exist_ok=True)
            overrides = kafka_sasl.server_properties(creds, entry["port"], entry["controller_port"]) if creds else None
            node["props"].write_text(kafka.render_server_properties(
                node["data"], entry["port"], entry["controller_port"], node_id=entry["node_id"], voters=voters,
                overrides=overrides))
            node["props"].chmod(0o600)  # SASL: the admin's password
            formats.append(kafka.format_storage(jars, node["props"], node["log"], node["data"], cluster_id,
                                                kafka_sasl.scram_format_args(creds) if creds else None))
        _children.extend(formats)
        root = postgres.prepare_root(state_dir)
        record["postgres"] = {"port": p_port, "root": str(root), "log": str(root / "postgres.log")}
        pw = postgres.passwords(root)
        record["database_url"] = postgres.database_url(p_port, password=pw[postgres.DB_ROLE])
        record["api_database_url"] = postgres.database_url(p_port, user=postgres.READER_ROLE,
                                                           password=pw[postgres.READER_ROLE])
        postgres.initdb(bin_dir, root / "data", pw[postgres.PG_USER])  # runs while the StorageTool JVMs format
        for fmt in formats:
            if fmt.wait(timeout=max(1.0, deadline - time.monotonic())) != 0:
                raise DevstackError(f"kafka storage format failed ({fmt.returncode})")
        heap = kafka.HEAP if brokers == 1 else kafka.CLUSTER_HEAP
        started = []
        for entry in entries:
            node = _node_paths(state_dir, entry["node_id"])
            started.append(kafka.start(jars, node["props"], node["log"], heap=heap))
            entry["pid"] = started[-1].pid
        _children.extend(started)
        record["kafka"]["pid"] = started[0].pid
        _save(state_dir, record)
        current_log = root / "postgres.log"
        postgres.start(bin_dir, root, p_port, deadline - time.monotonic())
        record["postgres"]["pid"] = postgres.postmaster_pid(root / "data")
        _save(state_dir, record)
        admin_url = postgres.database_url(p_port, user=postgres.PG_USER, db="postgres", password=pw[postgres.PG_USER])
        if not _wait_until(lambda: postgres.probe(admin_url), deadline):
            raise DevstackError("postgres did not accept connections in time")
        postgres.ensure_database(p_port, pw)
        log.info("postgres ready on port %d after %.1fs", p_port, time.monotonic() - t0)
        current_log = paths["kafka_log"]
        exited = lambda: next((p for p in started if p.poll() is not None), None)  # noqa: E731
        security = creds.client_args(kafka_sasl.ADMIN) if creds else None
        if not _wait_until(lambda: exited() is not None or kafka.probe(k_port, brokers, security), deadline):
            raise DevstackError(f"kafka did not answer a metadata request listing {brokers} broker(s) in time")
        if (dead := exited()) is not None:
            current_log = Path(entries[started.index(dead)]["log"])
            raise DevstackError(f"kafka exited with {dead.returncode}")
        if creds:
            kafka_sasl.grant(kafka.tool_command(jars), creds, record["kafka_bootstrap"], ServiceSettings.topic,
                             ServiceSettings.processor_group, state_dir, paths["kafka_log"])
        log.info("kafka ready on port(s) %s after %.1fs", ",".join(str(k) for k, _ in nodes), time.monotonic() - t0)
    except BaseException as exc:
        for fmt in formats:
            if fmt.poll() is None:
                fmt.kill()
        tail = _tail(current_log)
        print(f"runstream.devstack: start failed: {exc}\n--- tail of {current_log} ---\n{tail}", file=sys.stderr)
        down(state_dir)
        if isinstance(exc, Exception):
            raise DevstackError(f"{exc}\n--- tail of {current_log} ---\n{tail}") from exc
        raise
    record["ready"] = True
    _save(state_dir, record)
    info = StackInfo(state_dir, record["kafka_bootstrap"], record["database_url"], brokers, creds,
                     record["api_database_url"])
    paths["env"].touch()
    paths["env"].chmod(0o600)  # SASL: the service user's password
    paths["env"].write_text(render_env(info.env()))
    return info


# ---------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    """``python -m runstream.devstack up|down|status [--state-dir DIR]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m runstream.devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=None, help="default: $RUNSTREAM_STATE_DIR or ./.state/stack")
    parser.add_argument("--kafka-port", type=int, default=None)
    parser.add_argument("--pg-port", type=int, default=None)
    parser.add_argument("--brokers", type=int, default=1, help="Kafka nodes (3: a replicated cluster)")
    parser.add_argument("--keep", action="store_true", help="up: reuse a running stack / keep existing data")
    parser.add_argument("--sasl", action="store_true", help="up: Kafka with SASL/SCRAM users and ACLs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    state_dir = args.state_dir or default_state_dir()
    if args.command == "up":
        try:
            info = up(state_dir, kafka_port=args.kafka_port, pg_port=args.pg_port, fresh=not args.keep,
                      brokers=args.brokers, sasl=args.sasl)
        except DevstackError as exc:  # up() already printed the log tail, if any
            print(f"runstream.devstack: up failed: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1
        sys.stdout.write(render_env(info.env(), export=True))
        return 0
    if args.command == "down":
        down(state_dir)
        return 0
    running = read_info(state_dir)
    sys.stdout.write(render_brokers(broker_status(state_dir)))
    if running is None:
        print(f"not running ({Path(state_dir).resolve()})")
        return 1
    sys.stdout.write(f"running ({running.state_dir})\n" + render_env(running.env(), export=True))
    return 0


def render_brokers(brokers: list[dict[str, Any]]) -> str:
    """One ``# broker N 127.0.0.1:PORT pid P|down`` line per broker (shell comments)."""
    return "".join(f"# broker {b['node_id']} 127.0.0.1:{b['port']} "
                   f"{'pid ' + str(b['pid']) if b['pid'] else 'down'}\n" for b in brokers)
