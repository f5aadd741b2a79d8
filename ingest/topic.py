"""The event topic: created by the services (processors, gateway) and ``runstream migrate``,
never by the SDK, with replication chosen from the cluster's size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


def min_insync_replicas(replicas: int) -> int:
    """``min.insync.replicas`` for a replication factor: a majority from 3 up (3 -> 2), else 1.

    With 3 replicas and 2 in sync, an acks=all write survives losing any one broker and
    the topic keeps accepting writes while one is down.
    """
    return (replicas + 1) // 2 if replicas >= 3 else 1


async def ensure_topic(bootstrap: str, topic: str, partitions: int, *, replication: int | None = None,
                       security: Mapping[str, Any] | None = None) -> None:
    """Create the event topic if it does not exist.

    ``replication`` None chooses from the cluster: 3 replicas when it has at least three
    live brokers, else as many as it has (1 on a single broker), with
    :func:`min_insync_replicas` in sync. An existing topic is left as it is. ``security``:
    SASL arguments (``Settings.kafka_security()``).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        if topic in set(await admin.list_topics()):
            return
        if replication is None:
            replication = max(1, min(3, len((await admin.describe_cluster())["brokers"])))
        configs = {"min.insync.replicas": str(min_insync_replicas(replication))}
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=replication,
                                                topic_configs=configs)])
        except TopicAlreadyExistsError:
            pass
    finally:
        await admin.close()
