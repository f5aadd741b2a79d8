"""A 3-broker KRaft cluster (devstack ``brokers=3``): replication, and losing a broker mid-stream.

The cluster lives in its own state dir with its own PostgreSQL, one ``runstream processor``
subprocess; a broker SIGKILLed while a script logs is not restarted: the SDK and the
processor carry on with the other two, and every point is stored exactly once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from benchmarks.faults import FaultStack, Workload, start_stack, wait_until
from runstream import devstack
from runstream.ingest.topic import ensure_topic
from tests.support.faults import POINTS, RATE, assert_stored_once, state_dir
from tests.support.names import REPO, unique


@pytest.fixture(scope="module")
def cluster() -> Iterator[FaultStack]:
    stack = start_stack(state_dir("cluster"), brokers=3, gateway=False)
    try:
        yield stack
    finally:
        stack.close()


async def _describe(bootstrap: str, topic: str) -> tuple[list[Any], dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        (configs,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = {c[0]: c[1] for c in configs.resources[0][4]}
        return described["partitions"], entries
    finally:
        await admin.close()


def test_the_record_and_status_list_every_broker(cluster: FaultStack) -> None:
    brokers = devstack.broker_status(cluster.state_dir)
    assert [b["node_id"] for b in brokers] == [1, 2, 3]
    assert all(b["pid"] for b in brokers)
    assert cluster.settings.kafka_bootstrap == ",".join(f"127.0.0.1:{b['port']}" for b in brokers)
    info = devstack.read_info(cluster.state_dir)
    assert info is not None and info.brokers == 3
    status = subprocess.run([sys.executable, "-m", "runstream.devstack", "status", "--state-dir",
                             str(cluster.state_dir)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert [line.split()[2] for line in status.stdout.splitlines() if line.startswith("# broker")] == ["1", "2", "3"]


def test_topics_are_replicated_three_ways_with_two_in_sync(cluster: FaultStack) -> None:
    topic = unique("replicated")
    asyncio.run(ensure_topic(cluster.settings.kafka_bootstrap, topic, 4))
    # Topic creation reaches every broker's metadata a moment after create_topics returns
    # (until then a broker describes no partitions, or the topic's configs with an error).
    def described() -> tuple[list[Any], dict[str, str]] | None:
        partitions, configs = asyncio.run(_describe(cluster.settings.kafka_bootstrap, topic))
        return (partitions, configs) if partitions and "min.insync.replicas" in configs else None

    partitions, configs = wait_until(described, 30, f"{topic} in the metadata")
    assert len(partitions) == 4 and all(len(p["replicas"]) == 3 for p in partitions)
    assert configs["min.insync.replicas"] == "2"
    # Kafka's own topic of consumer offsets (the processor's group created it) too.
    offsets = wait_until(lambda: asyncio.run(_describe(cluster.settings.kafka_bootstrap, "__consumer_offsets"))[0],
                         60, "the consumer offsets topic")
    assert all(len(p["replicas"]) == 3 for p in offsets)


def test_one_broker_of_three_sigkilled_mid_stream_loses_nothing(cluster: FaultStack) -> None:
    workload = Workload(cluster, unique("cluster-kill"), points=POINTS, rate=RATE)
    workload.wait_logged(POINTS // 5)
    cluster.kill_broker(1)  # the first bootstrap server; not restarted
    assert_stored_once(cluster, workload)
    assert [b["pid"] is None for b in devstack.broker_status(cluster.state_dir)] == [True, False, False]
