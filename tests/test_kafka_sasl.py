"""Direct Kafka producers are authenticated (issue 11, item 3): `services up --sasl`.

This module starts its own small stack with SASL/SCRAM and ACLs on (the session's stack
stays unauthenticated), runs `runstream serve` on it as the service user, and checks that
a client without credentials or with wrong ones cannot produce, that the SDK's user can
produce (a run logged with the SDK over Kafka is materialized and read back) but can
neither read the topic, join the processors' group, nor create or delete topics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from runstream import Experiment, Workspace, devstack
from runstream.devstack import kafka_sasl
from runstream.devstack.demo import wait_ready
from runstream.devstack.stack import free_ports
from runstream.schemas.migrate import migrate
from runstream.settings import Settings
from tests.support import events
from tests.support.names import unique
from tests.support.services import start_serve, stop

AUTHORIZATION_FAILED = 29
"""Kafka's TOPIC_AUTHORIZATION_FAILED error code, as CreateTopics/DeleteTopics answer it."""


@pytest.fixture(scope="module")
def sasl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.StackInfo]:
    state_dir = tmp_path_factory.mktemp("sasl-stack")
    info = devstack.up(state_dir, sasl=True)
    try:
        yield info
    finally:
        devstack.down(state_dir)


@pytest.fixture(scope="module")
def sasl_services(sasl_stack: devstack.StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """`runstream serve` authenticating as the service user, and its settings."""
    assert sasl_stack.sasl is not None
    api_port, gateway_port, metrics_port = free_ports(3)
    s = Settings.from_env(
        sasl_stack.env(), blob_dir=str(tmp_path_factory.mktemp("blobs")), spool_dir=str(tmp_path_factory.mktemp("spool")),
        partitions=2, api_port=api_port, gateway_port=gateway_port, metrics_port=metrics_port,
        api_url=f"http://127.0.0.1:{api_port}", ingest_url=f"http://127.0.0.1:{gateway_port}",
        auth="off")  # on loopback; Kafka's own authentication is what this module tests
    assert s.kafka_sasl_username == kafka_sasl.SERVICE
    migrate(s.database_url)
    process = start_serve(s, log=sasl_stack.state_dir / "serve.log")
    try:
        wait_ready(s, process)
        yield s
    finally:
        stop(process)


def sdk_settings(services: Settings, stack: devstack.StackInfo) -> Settings:
    """The services' settings with the SDK user's credentials instead (a training machine's)."""
    return Settings.from_env({**services.to_env(), **stack.sdk_env()})


async def produce(bootstrap: str, **security: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, **security)
    try:
        await asyncio.wait_for(producer.start(), 30)
        await asyncio.wait_for(producer.send_and_wait(Settings.topic, b"{}"), 30)
    finally:
        await producer.stop()


async def test_no_or_wrong_credentials_cannot_produce(sasl_stack: devstack.StackInfo) -> None:
    assert sasl_stack.sasl is not None
    with pytest.raises(KafkaConnectionError):  # a PLAINTEXT client: the broker closes the connection
        await produce(sasl_stack.kafka_bootstrap)
    wrong = {**sasl_stack.sasl.client_args(kafka_sasl.SDK), "sasl_plain_password": "guessed"}
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        await produce(sasl_stack.kafka_bootstrap, **wrong)
    unknown = {**wrong, "sasl_plain_username": "mallory"}
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        await produce(sasl_stack.kafka_bootstrap, **unknown)


def test_the_sdk_user_logs_a_run_that_the_services_materialize(sasl_services: Settings,
                                                               sasl_stack: devstack.StackInfo) -> None:
    s = sdk_settings(sasl_services, sasl_stack)
    assert (s.kafka_sasl_username, s.transport) == (kafka_sasl.SDK, "kafka")
    ws = Workspace(settings=s)
    try:
        run = Experiment(ws, unique("sasl")).start_logging()
        run.log("loss", 0.25)
        run.complete()  # waits until the query API has materialized it (read-your-writes)
        assert run.get_metrics()["loss"] == 0.25
        assert run.get_status() == "completed"
    finally:
        ws.close()


async def test_the_sdk_user_can_only_produce_to_the_event_topic(sasl_services: Settings,
                                                                sasl_stack: devstack.StackInfo) -> None:
    assert sasl_stack.sasl is not None
    sdk = sasl_stack.sasl.client_args(kafka_sasl.SDK)
    bootstrap, topic = sasl_stack.kafka_bootstrap, sasl_services.topic
    run_id = events.new_run_id()
    await events.produce(sdk_settings(sasl_services, sasl_stack), [(run_id, events.started(run_id, unique("p")))])

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **sdk)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(producer.send_and_wait(unique("other-topic"), b"{}"), 30)
    finally:
        await producer.stop()

    # Reading the events: neither as the processors' group nor by assigning a partition.
    member = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=sasl_services.processor_group, **sdk)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await member.start()
            await asyncio.wait_for(member.getmany(timeout_ms=5000), 30)
    finally:
        await member.stop()
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, **sdk)
    await reader.start()
    try:
        tp = TopicPartition(topic, 0)
        reader.assign([tp])
        with pytest.raises(TopicAuthorizationFailedError):
            await reader.seek_to_beginning(tp)
            await asyncio.wait_for(reader.getmany(timeout_ms=5000), 30)
    finally:
        await reader.stop()

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **sdk)
    await admin.start()
    try:
        created = await admin.create_topics([NewTopic(unique("evil"), 1, 1)])
        assert [e[1] for e in created.topic_errors] == [AUTHORIZATION_FAILED]
        deleted = await admin.delete_topics([topic])
        assert [e[1] for e in deleted.topic_error_codes] == [AUTHORIZATION_FAILED]
    finally:
        await admin.close()
    assert topic in await _topics(bootstrap, sasl_stack.admin_security())


async def _topics(bootstrap: str, security: dict[str, str]) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_settings_refuse_half_configured_sasl(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs RUNSTREAM_KAFKA_SASL_USERNAME"):
        Settings.from_env({"RUNSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}).kafka_security()
    with pytest.raises(ValueError, match="expected PLAINTEXT, SASL_PLAINTEXT or SASL_SSL"):
        Settings.from_env({"RUNSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL"}).kafka_security()
    s = Settings.from_env({}, kafka_sasl_password="hunter2")
    assert "hunter2" not in repr(s) and replace(s).kafka_security() == {}


def test_a_running_sasl_stack_is_reused_with_its_credentials(sasl_stack: devstack.StackInfo) -> None:
    again = devstack.up(sasl_stack.state_dir, sasl=True, fresh=False)  # probes as the admin, then reuses
    assert (again.kafka_bootstrap, again.sasl) == (sasl_stack.kafka_bootstrap, sasl_stack.sasl)
    assert (sasl_stack.state_dir / "stack.json").stat().st_mode & 0o077 == 0  # it holds the passwords
