"""The one place that reads ``RUNSTREAM_*`` environment variables.

Two halves: :class:`ClientSettings`, what the SDK needs on a training machine (where to
send events and read them back, how long to wait, where to keep what is not delivered),
and :class:`ServiceSettings`, what the gateway, the processors and the query API need
(database, listeners, consumer group). :class:`Settings` is both, for the tools that
configure a whole stack (``runstream serve``, the devstack, the tests). A setting's env name
is ``RUNSTREAM_`` + its field name upper-cased, whichever half it belongs to; library code
below the entry points takes plain arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "RUNSTREAM_"
S = TypeVar("S", bound="_Env")


@dataclass(frozen=True)
class _Env:
    """Read from ``RUNSTREAM_*``; the fields both halves need."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, comma-separated."""
    topic: str = "runstream.events"
    """The event topic."""
    blob_dir: str = str(Path.home() / ".runstream" / "blobs")
    """Directory of the content-addressed artifact store."""
    kafka_security_protocol: str = "PLAINTEXT"
    """How Kafka clients connect: ``PLAINTEXT`` (a loopback devstack), or ``SASL_PLAINTEXT`` /
    ``SASL_SSL`` to authenticate with ``kafka_sasl_username``/``_password`` (``services up --sasl``)."""
    kafka_sasl_mechanism: str = "SCRAM-SHA-256"
    """The SASL mechanism when ``kafka_security_protocol`` is SASL_*: SCRAM-SHA-256 or SCRAM-SHA-512."""
    kafka_sasl_username: str = ""
    """The Kafka principal's SCRAM user (the SDK's may only produce to the event topic)."""
    kafka_sasl_password: str = field(default="", repr=False)
    """Its SCRAM password (never printed in a settings repr)."""

    def kafka_security(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka client of these settings takes (none for PLAINTEXT)."""
        protocol = self.kafka_security_protocol.upper()
        if protocol == "PLAINTEXT":
            return {}
        if protocol not in ("SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError(f"RUNSTREAM_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol!r}: "
                             "expected PLAINTEXT, SASL_PLAINTEXT or SASL_SSL")
        if not self.kafka_sasl_username or not self.kafka_sasl_password:
            raise ValueError(f"RUNSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} needs RUNSTREAM_KAFKA_SASL_USERNAME "
                             "and RUNSTREAM_KAFKA_SASL_PASSWORD")
        args: dict[str, Any] = {"security_protocol": protocol, "sasl_mechanism": self.kafka_sasl_mechanism.upper(),
                                "sasl_plain_username": self.kafka_sasl_username,
                                "sasl_plain_password": self.kafka_sasl_password}
        if protocol == "SASL_SSL":  # the system's trusted CAs, hostname checked
            import ssl

            args["ssl_context"] = ssl.create_default_context()
        return args

    @classmethod
    def from_env(cls: type[S], env: Mapping[str, str] | None = None, **overrides: object) -> S:
        """Defaults, then ``RUNSTREAM_*`` variables, then keyword overrides."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            try:
                values[f.name] = int(raw) if f.type in (int, "int") else float(raw) if f.type in (float, "float") else raw
            except ValueError:
                kind = "an integer" if f.type in (int, "int") else "a number"
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not {kind}") from None
        return replace(cls(**values), **overrides)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """``RUNSTREAM_*`` variables that reproduce these settings in a child process."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    @staticmethod
    def env_names() -> set[str]:
        """Every environment variable this module reads (both halves)."""
        return {ENV_PREFIX + f.name.upper() for f in fields(Settings)}

    @staticmethod
    def env_is_set(env: Mapping[str, str] | None = None) -> bool:
        """Whether any of :meth:`env_names` is set (in ``env``, default the process's environment)."""
        env = os.environ if env is None else env
        return any(name in env for name in Settings.env_names())


@dataclass(frozen=True)
class ClientSettings(_Env):
    """What the SDK needs (``Workspace``, ``runstream sync``)."""

    transport: str = "kafka"
    """How the SDK sends events: ``kafka`` (direct) or ``http`` (through the gateway)."""
    api_url: str = "http://127.0.0.1:8080"
    """Base URL of the query API (the SDK reads metrics through it)."""
    ingest_url: str = "http://127.0.0.1:8081"
    """Base URL of the ingest gateway (HTTP transport and artifact uploads)."""
    portal_url: str = ""
    """Base URL of the web UI for ``run.get_portal_url()``; empty means the API's own URL."""
    spool_dir: str = str(Path.home() / ".runstream" / "spool")
    """Where the SDK keeps events it could not send yet."""
    memory_budget_bytes: int = 64 * 1024 * 1024
    """Most memory the SDK's buffers take: logging calls waiting to be folded and encoded,
    unacknowledged events (shared out in ``runstream.sender.budget_shares``); events beyond
    their share (and all of them while Kafka or the gateway is unreachable) go to the
    outbox in ``spool_dir``, and a caller logging faster than they are folded waits."""
    delivery_timeout: int = 30
    """Seconds ``complete()``, ``flush()``, ``Workspace.close()`` and interpreter exit wait for
    delivery; what is still unsent then stays in ``spool_dir`` for ``runstream sync``."""
    token: str = field(default="", repr=False)
    """The API token (``runstream token create``) the SDK sends on every request to the query
    API and the gateway (``Workspace(token=...)`` and ``runstream.json``'s ``token`` set it too);
    empty sends none (a stack with authentication off)."""
    workspace: str = ""
    """The workspace the SDK's Kafka transport stamps on its events; empty: the token's (asked
    of the query API's ``/api/whoami`` when the transport starts), or ``default`` without a
    token. Over HTTP the gateway stamps the token's workspace whatever this says; processors
    dead-letter an event whose workspace is not its run's."""
    materialize_timeout: float = 10.0
    """Longest time, in seconds, ``run.complete()``/``fail()``/``cancel()``/``flush()`` wait after
    the acks for the query API to have materialized the run (read-your-writes across
    processes); then they return with a warning. 0 skips the wait."""
    system_metrics_interval: float = 10.0
    """Seconds between samples of CPU, memory, disk, network and GPU metrics (``system/*``)
    of submitted runs and of ``start_logging(log_system_metrics=True)``; 0 turns them off."""

    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header of :attr:`token` (none without a token)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass(frozen=True)
class ServiceSettings(_Env):
    """What the services need (gateway, processors, query API, ``runstream migrate``)."""

    partitions: int = 8
    """Partitions the topic is created with (the processors' unit of parallelism)."""
    database_url: str = "postgresql://runstream@127.0.0.1:5432/runstream"
    """PostgreSQL / TimescaleDB connection URL."""
    ui_dir: str = ""
    """Directory of the built web UI; empty means ``ui/dist`` of the source tree."""
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8081
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    """Port of the processors' Prometheus ``/metrics`` (``runstream processor`` and ``serve``); 0 disables it."""
    processor_group: str = "runstream-processors"
    """Kafka consumer group of the processors."""
    processor_max_records: int = 20_000
    """Most Kafka messages one processor transaction takes."""
    processor_trace: str = ""
    """File a processor appends one JSON line per committed batch to (fetch, write start and
    commit times, each partition's offset range: ``processors.trace``); empty: off. For the
    benchmark's per-stage latency timeline; members and processes may share one file (each
    record is one append)."""
    api_database_url: str = ""
    """Connection URL of the query API: a role that may only read (devstack: ``runstream_reader``);
    empty means ``database_url``."""
    allowed_hosts: str = ""
    """Host names (comma-separated) the API and gateway answer to besides loopback names and
    addresses, which are always allowed; any other ``Host`` header is a 400 (DNS rebinding).
    ``*`` turns the check off (behind a proxy that checks it)."""
    cors_origins: str = ""
    """Origins (``scheme://host[:port]``, comma-separated) whose cross-origin requests the API
    and gateway allow; empty: none (preflights are answered 403, never with ``*``)."""
    api_max_body_bytes: int = 2 * 1024 * 1024
    """Largest request body the query API accepts (MLflow's log-batch takes up to 1 MB; run
    management bodies are small; artifact uploads stream under ``max_upload_bytes``); 413 beyond."""
    max_upload_bytes: int = 2 * 1024**3
    """Largest artifact one upload may carry (the gateway's ``PUT /api/v1/blobs/{sha256}``, MLflow's
    ``PUT /api/2.0/mlflow-artifacts/artifacts/...``); 413 beyond."""
    blob_quota_bytes: int = 50 * 1024**3
    """Bytes of artifacts one workspace may store through the gateway (each distinct blob counted
    once per workspace); 507 beyond. 0: no quota."""
    gateway_rate_per_s: float = 200.0
    """Requests per second the gateway takes per token (or client address without one), on
    average; 429 with ``Retry-After`` beyond. 0: no limit."""
    gateway_rate_burst: int = 2000
    """Requests a token (or client) may send at once before ``gateway_rate_per_s`` applies."""
    auth_failure_rate_per_s: float = 0.5
    """Failed authentications per second a client address may make on average, once its
    ``auth_failure_burst`` is spent (no, a malformed, unknown, revoked, expired or wrong
    token; a failed ``POST /api/login``). Beyond it, requests whose credentials fail and every
    login are 429 with ``Retry-After``, before the KDF runs; a token that the process verified
    before is never refused. Wrong secrets for one token id spend the same budget per id,
    from any address. Per process, on the query API and the gateway. 0: no limit."""
    auth_failure_burst: int = 20
    """Failed authentications a client address (or a token id) may make at once before
    ``auth_failure_rate_per_s`` applies."""
    live_streams_max: int = 500
    """Live (SSE) streams one query API process holds open at once; 429 beyond."""
    live_streams_per_principal: int = 50
    """Live (SSE) streams one token (or client address without one) may hold open at once; 429 beyond."""
    auth: str = "on"
    """``on``: every request of the query API and the gateway needs a token (docs/SECURITY.md);
    ``off``: none does (all is workspace ``default``), allowed only while every listener is
    bound to loopback (the services refuse to start otherwise)."""


@dataclass(frozen=True)
class Settings(ClientSettings, ServiceSettings):
    """Both halves: a whole stack's settings (``runstream serve``, the devstack, tests)."""
