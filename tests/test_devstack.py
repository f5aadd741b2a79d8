"""Pure helpers of runstream.devstack (no services are started here)."""

from __future__ import annotations

import base64
import shlex
import socket
from pathlib import Path

import pytest

from runstream.devstack import StackInfo, kafka, postgres, stack


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = stack.free_ports(3)
    assert len(set(ports)) == 3
    assert all(stack.port_is_free(p) for p in ports)


def test_port_is_free_sees_a_listener() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not stack.port_is_free(s.getsockname()[1])


def test_env_and_its_rendering() -> None:
    info = StackInfo(Path("/x"), "127.0.0.1:9092", "postgresql://runstream@127.0.0.1:5432/runstream")
    env = info.env()
    assert env == {"RUNSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
                   "RUNSTREAM_DATABASE_URL": "postgresql://runstream@127.0.0.1:5432/runstream"}
    assert stack.render_env(env).splitlines()[0] == "RUNSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:9092"
    line = stack.render_env({"K": "a b'c"}, export=True).strip()
    assert line.startswith("export K=") and shlex.split(line[len("export K="):]) == ["a b'c"]


def test_default_state_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNSTREAM_STATE_DIR", str(tmp_path / "s"))
    assert stack.default_state_dir() == tmp_path / "s"
    monkeypatch.delenv("RUNSTREAM_STATE_DIR")
    monkeypatch.chdir(tmp_path)
    assert stack.default_state_dir() == tmp_path / ".state" / "stack"


def test_cluster_id_is_kafka_shaped() -> None:
    ids = {kafka.random_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_server_properties() -> None:
    text = kafka.render_server_properties(Path("/d/kafka-data"), 19092, 19093)
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"] == "/d/kafka-data"
    assert props["num.partitions"] == props["offsets.topic.num.partitions"] == "4"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["transaction.state.log.min.isr"] == "1"


def test_postgres_conf_keeps_durability() -> None:
    conf = postgres.render_conf(5433, "/s")
    assert "port = 5433" in conf and "unix_socket_directories = '/s'" in conf
    assert "synchronous_commit = on" in conf and "fsync = on" in conf
    assert "shared_preload_libraries" not in conf


def test_socket_dir_falls_back_to_tcp_only_for_long_paths(tmp_path: Path) -> None:
    assert postgres.socket_dir(Path("/tmp/x")) == "/tmp/x/sock"
    assert postgres.socket_dir(Path("/" + "d" * 120)) == ""


def test_jar_cache_marker(tmp_path: Path) -> None:
    assert not kafka.jars_complete(tmp_path)
    (tmp_path / kafka.MAIN_JAR).write_bytes(b"")
    (tmp_path / kafka.MARKER).write_text("stale-digest\n")
    assert not kafka.jars_complete(tmp_path)
    (tmp_path / kafka.MARKER).write_text(kafka._pom_digest() + "\n")
    assert kafka.jars_complete(tmp_path)


def test_process_matchers() -> None:
    props = Path("/s/server.properties")
    assert kafka.is_broker_cmdline(["java", "-cp", "x/*", "kafka.Kafka", str(props)], props)
    assert not kafka.is_broker_cmdline(["java", "kafka.Kafka", "/other/server.properties"], props)
    data = Path("/s/pg/data")
    assert postgres.is_postmaster_cmdline(["/usr/lib/postgresql/15/bin/postgres", "-D", str(data)], data)
    assert not postgres.is_postmaster_cmdline(["postgres: checkpointer "], data)


def test_read_info_and_down_without_a_stack(tmp_path: Path) -> None:
    assert stack.read_info(tmp_path) is None
    stack.down(tmp_path)  # idempotent, nothing to stop
    assert stack.read_info(tmp_path) is None


def test_a_formatted_kafka_data_dir_keeps_its_cluster_id(tmp_path: Path) -> None:
    from runstream.devstack import kafka

    assert kafka.existing_cluster_id(tmp_path) is None
    (tmp_path / "meta.properties").write_text("#\nnode.id=1\ncluster.id=abcDEF123\nversion=1\n")
    assert kafka.existing_cluster_id(tmp_path) == "abcDEF123"


def test_cluster_node_properties_replicate_everything_three_ways() -> None:
    voters = {1: 19093, 2: 19095, 3: 19097}
    text = kafka.render_server_properties(Path("/d/kafka-data-2"), 19094, 19095, node_id=2, voters=voters)
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor"):
        assert props[key] == "3", key
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    assert int(props["broker.session.timeout.ms"]) < 9000  # a dead node is fenced quickly
    # A single node keeps every factor at 1 and Kafka's default failure detection.
    single = kafka.render_server_properties(Path("/d"), 1, 2)
    assert "default.replication.factor=1" in single and "broker.session.timeout.ms" not in single


def test_min_insync_replicas_is_a_majority_from_three() -> None:
    from runstream.ingest.topic import min_insync_replicas

    assert [min_insync_replicas(n) for n in (1, 2, 3, 5)] == [1, 1, 2, 3]


def test_ports_for_a_cluster_are_distinct(tmp_path: Path) -> None:
    nodes, pg_port = stack._pick_ports(tmp_path, None, None, brokers=3)
    ports = [p for node in nodes for p in node] + [pg_port]
    assert len(nodes) == 3 and len(set(ports)) == 7


def test_broker_status_of_an_empty_state_dir(tmp_path: Path) -> None:
    assert stack.broker_status(tmp_path) == []
    with pytest.raises(stack.DevstackError, match="no broker 2"):
        stack.start_broker(tmp_path, 2)
