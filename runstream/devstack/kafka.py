"""A single-node Apache Kafka 3.9.1 (KRaft, broker + controller) from Maven Central jars.

Jars are resolved once by Maven from ``kafka-pom.xml`` into a cache directory outside
the work tree; the broker is one ``java ... kafka.Kafka server.properties`` process.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Coroutine

KAFKA_VERSION = "3.9.1"
HERE = Path(__file__).resolve().parent
POM = HERE / "kafka-pom.xml"
LOG4J = HERE / "log4j.properties"
MAIN_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"
MARKER = ".complete"
HEAP = ("-Xms256m", "-Xmx768m")
JVM_OPTS = (
    "-server",
    "-XX:+UseG1GC",
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


def render_server_properties(data_dir: Path, port: int, controller_port: int, *, partitions: int = 4) -> str:
    """``server.properties`` of a one-node KRaft broker+controller listening on 127.0.0.1."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.hours": "168",
    }
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


def format_storage(jars: Path, props: Path, log: Path, data_dir: Path) -> subprocess.Popen[bytes]:
    """Start ``kafka.tools.StorageTool format`` (a new cluster id, or the one ``data_dir``
    already has, so a restart on kept data works); the caller waits for it."""
    cluster_id = existing_cluster_id(data_dir) or random_cluster_id()
    cmd = [java(), "-Xmx256m", *_classpath_args(jars), "kafka.tools.StorageTool",
           "format", "-t", cluster_id, "-c", str(props), "--ignore-formatted"]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def start(jars: Path, props: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start the broker in its own session (it outlives the caller); output goes to ``log``."""
    cmd = [java(), *HEAP, *JVM_OPTS, *_classpath_args(jars), "kafka.Kafka", str(props)]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=props.parent, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def is_broker_cmdline(args: list[str], props: Path) -> bool:
    """Whether a process command line is the broker started with ``props``."""
    return "kafka.Kafka" in args and str(props) in args


async def _metadata(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        return bool((await admin.describe_cluster())["brokers"])
    finally:
        await admin.close()


def probe(port: int) -> bool:
    """True when the broker on 127.0.0.1:``port`` answers a metadata request listing itself."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    try:
        return _run(asyncio.wait_for(_metadata(f"127.0.0.1:{port}"), 10))
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
