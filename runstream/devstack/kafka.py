"""Apache Kafka 3.9.1 (KRaft) from Maven Central jars: one node, or a cluster of combined nodes.

Jars are resolved once by Maven from ``kafka-pom.xml`` into a cache directory outside
the work tree; each node is one ``java ... kafka.Kafka server.properties`` process acting
as broker and controller (a cluster of N nodes is an N-voter controller quorum).
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runstream.ingest.topic import min_insync_replicas

KAFKA_VERSION = "3.9.1"
HERE = Path(__file__).resolve().parent
POM = HERE / "kafka-pom.xml"
LOG4J = HERE / "log4j.properties"
MAIN_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"
MARKER = ".complete"
HEAP = ("-Xms256m", "-Xmx768m")
CLUSTER_HEAP = ("-Xms128m", "-Xmx512m")
"""Per node of a multi-node cluster: three JVMs share the machine with everything else."""
JVM_OPTS = (
    "-server",
    "-XX:+UseG1GC",
    # C1 only: a devstack broker lives for minutes to hours, and C2's compilations of a fresh
    # broker took about half of its CPU in the benchmark's latency rows (4.6 against 8-10
    # CPU-seconds for the same rows back to back), on the cores the rest of the stack needs.
    "-XX:TieredStopAtLevel=1",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


def cache_dir() -> Path:
    """Where the Kafka jars live: ``$RUNSTREAM_CACHE_DIR`` or ``~/.cache/runstream/kafka-3.9.1``."""
    env = os.environ.get("RUNSTREAM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "runstream" / f"kafka-{KAFKA_VERSION}"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def jars_complete(cache: Path) -> bool:
    """True when ``cache`` holds a finished ``mvn`` copy for the current ``kafka-pom.xml``."""
    marker = cache / MARKER
    return marker.is_file() and marker.read_text().strip() == _pom_digest() and (cache / MAIN_JAR).is_file()


def resolve_jars(cache: Path | None = None) -> Path:
    """Return a directory holding every runtime jar of the broker, running Maven only if needed.

    Maven copies into a temporary sibling directory which replaces ``cache`` only after
    success, under an exclusive file lock, so an interrupted or concurrent run never
    leaves a half-filled cache behind.
    """
    cache = (cache or cache_dir()).resolve()
    if jars_complete(cache):
        return cache
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (mvn) is not installed; run scripts/install-system-deps.sh as root")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f".{cache.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jars_complete(cache):
            return cache
        tmp = cache.parent / f".{cache.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={tmp}"]
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if res.returncode != 0 or not (tmp / MAIN_JAR).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
        (tmp / MARKER).write_text(_pom_digest() + "\n")
        shutil.rmtree(cache, ignore_errors=True)
        tmp.rename(cache)
    return cache


def random_cluster_id() -> str:
    """A cluster id as ``kafka-storage.sh random-uuid`` prints it (URL-safe base64 of 16 random bytes)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka's Uuid.randomUuid() avoids these too
            return cid


def render_server_properties(data_dir: Path, port: int, controller_port: int, *, partitions: int = 4,
                             node_id: int = 1, voters: dict[int, int] | None = None,
                             overrides: dict[str, str] | None = None) -> str:
    """``server.properties`` of one KRaft broker+controller node listening on 127.0.0.1.

    ``voters`` maps every node id of the cluster to its controller port (default: this
    node alone). With three or more nodes every replication setting becomes 3 with a
    minimum of 2 in sync, the internal topics (consumer offsets, transaction state)
    included, and a dead node is fenced within seconds (failover in a test's time).
    ``overrides`` replace or add properties (SASL: ``kafka_sasl.server_properties``).
    """
    voters = voters or {node_id: controller_port}
    replicas = min(3, len(voters))
    min_isr = min_insync_replicas(replicas)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": ",".join(f"{n}@127.0.0.1:{p}" for n, p in sorted(voters.items())),
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(partitions),
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.hours": "168",
    }
    if len(voters) > 1:
        props.update({
            # Defaults fence a dead node after 9 s and drop a silent follower from the ISR
            # after 30 s; acks=all writes to its partitions wait that long. Loopback needs less.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "replica.lag.time.max.ms": "5000",
            "unclean.leader.election.enable": "false",
        })
    props.update(overrides or {})
    return "# Rendered by runstream.devstack; rewritten on every start.\n" + "".join(
        f"{k}={v}\n" for k, v in props.items()
    )


def java() -> str:
    """The ``java`` executable: ``$JAVA_HOME/bin/java`` or the one on ``PATH``."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise RuntimeError("java is not installed; run scripts/install-system-deps.sh as root")
    return found


def _classpath_args(jars: Path) -> list[str]:
    return [f"-Dlog4j.configuration=file:{LOG4J}", "-cp", f"{jars}/*"]


def tool_command(jars: Path) -> list[str]:
    """``java`` with the broker's classpath, for one of Kafka's command-line tools (a main class follows)."""
    return [java(), "-Xmx256m", "-XX:TieredStopAtLevel=1", *_classpath_args(jars)]


def existing_cluster_id(data_dir: Path) -> str | None:
    """The cluster id a formatted data directory already carries (restarts must reuse it)."""
    meta = data_dir / "meta.properties"
    if not meta.is_file():
        return None
    for line in meta.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return None


def format_storage(jars: Path, props: Path, log: Path, data_dir: Path,
                   cluster_id: str | None = None, extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``kafka.tools.StorageTool format`` (the one ``data_dir`` already has, so a
    restart on kept data works, else ``cluster_id`` or a new one); the caller waits for it.
    ``extra``: more arguments (SASL: ``kafka_sasl.scram_format_args``)."""
    cluster_id = existing_cluster_id(data_dir) or cluster_id or random_cluster_id()
    cmd = [java(), "-Xmx256m", *_classpath_args(jars), "kafka.tools.StorageTool",
           "format", "-t", cluster_id, "-c", str(props), "--ignore-formatted", *(extra or [])]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def start(jars: Path, props: Path, log: Path, *, heap: tuple[str, ...] = HEAP) -> subprocess.Popen[bytes]:
    """Start the broker in its own session (it outlives the caller); output goes to ``log``."""
    cmd = [java(), *heap, *JVM_OPTS, *_classpath_args(jars), "kafka.Kafka", str(props)]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=props.parent, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def is_broker_cmdline(args: list[str], props: Path) -> bool:
    """Whether a process command line is the broker started with ``props``."""
    return "kafka.Kafka" in args and str(props) in args


async def _metadata(bootstrap: str, brokers: int, security: dict[str, str]) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **security)
    try:
        await admin.start()
        return len((await admin.describe_cluster())["brokers"]) >= brokers
    finally:
        await admin.close()


def probe(port: int, brokers: int = 1, security: dict[str, str] | None = None) -> bool:
    """True when the broker on 127.0.0.1:``port`` answers a metadata request listing at
    least ``brokers`` live brokers (itself included); ``security``: SASL client arguments."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    try:
        return _run(asyncio.wait_for(_metadata(f"127.0.0.1:{port}", brokers, security or {}), 10))
    except Exception:
        return False


def _run(coro: Coroutine[Any, Any, bool]) -> bool:
    """``asyncio.run``, in a worker thread when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
