"""compose.yaml and Dockerfile agree with the code: settings names, CLI, packages.

Pure: parses the files, starts nothing (no Docker engine, Kafka or PostgreSQL needed).
Only ``test_docker_compose_config`` runs a tool, and skips itself where ``docker
compose`` (or ``docker-compose``) is not installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from runstream.cli import app
from runstream.settings import Settings

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"

# yaml.safe_load resolves anchors and `<<` merge keys, as compose does.
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

KAFKA, DB, BLOBS = "RUNSTREAM_KAFKA_BOOTSTRAP", "RUNSTREAM_DATABASE_URL", "RUNSTREAM_BLOB_DIR"
# What each of our services talks to (from the code: the gateway never opens the
# database, the query API never opens Kafka, migrations only need the database).
NEEDS: dict[str, set[str]] = {
    "migrate": {DB, KAFKA},  # the migrations, and the event topic
    "processor": {KAFKA, DB},
    "gateway": {KAFKA, BLOBS},
    "api": {DB, BLOBS},
}
OURS = sorted(NEEDS)
KAFKA_SERVICE, DB_SERVICE = "kafka", "db"


# --- helpers -------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value: str) -> str:
    """``${NAME:-default}`` -> default, as compose does when NAME is unset (here: always)."""
    def sub(m: re.Match[str]) -> str:
        if m.group(2) is None:
            pytest.fail(f"{value!r}: ${{{m.group(1)}}} has no default, so the file depends on the caller's env")
        return m.group(2)

    return _INTERPOLATION.sub(sub, value)


def env_of(service: str) -> dict[str, str]:
    """A service's environment as strings (compose accepts a mapping or a KEY=VALUE list)."""
    raw = SERVICES[service].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: _interpolate(str(v)) for k, v in raw.items() if v is not None}


def command_of(service: str) -> list[str]:
    cmd = SERVICES[service]["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def ports_of(service: str) -> list[tuple[str | None, int]]:
    """(published host port or None, container port) of each ``ports`` entry."""
    out: list[tuple[str | None, int]] = []
    for spec in SERVICES[service].get("ports") or []:
        if isinstance(spec, dict):
            published = spec.get("published")
            out.append((None if published is None else str(published), int(spec["target"])))
            continue
        parts = str(spec).split("/")[0].rsplit(":", 2)  # [ip:]host:container or container
        out.append((parts[-2] if len(parts) >= 2 else None, int(parts[-1])))
    return out


def volumes_of(service: str) -> dict[str, str]:
    """Container path -> source of each mount."""
    out: dict[str, str] = {}
    for spec in SERVICES[service].get("volumes") or []:
        if isinstance(spec, dict):
            out[spec["target"]] = spec.get("source", "")
        else:
            source, target = str(spec).split(":")[:2]
            out[target] = source
    return out


def depends_on(service: str) -> dict[str, str]:
    """Dependency -> condition (the short list form means service_started)."""
    raw = SERVICES[service].get("depends_on") or {}
    if isinstance(raw, list):
        return {name: "service_started" for name in raw}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and ``\\`` continuations joined."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def copy_sources() -> list[str]:
    """Source paths of every COPY/ADD from the build context (``--from=`` stages excluded)."""
    sources: list[str] = []
    for word, args in dockerfile_instructions():
        if word not in ("COPY", "ADD"):
            continue
        parts = args.split()
        if any(p.startswith("--from") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        if parts and parts[0].startswith("["):
            parts = yaml.safe_load(" ".join(parts))
        sources += parts[:-1]
    return sources


def compose_cli() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        probe = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return cmd
    return None


# --- (a) the images: official Kafka 3.9 in KRaft mode, TimescaleDB on PostgreSQL 17 ----


def test_compose_spec_file_without_version_key() -> None:
    assert "version" not in COMPOSE, "the Compose spec dropped `version:`; compose warns about it"
    assert set(SERVICES) == {KAFKA_SERVICE, DB_SERVICE, *OURS}


def test_kafka_is_the_official_3_9_image() -> None:
    assert re.fullmatch(r"apache/kafka:3\.9\.\d+", SERVICES[KAFKA_SERVICE]["image"])


def test_db_is_timescaledb_on_postgresql_17() -> None:
    assert re.fullmatch(r"timescale/timescaledb:(latest|[\d.]+)-pg17", SERVICES[DB_SERVICE]["image"])


def test_kafka_runs_kraft_broker_and_controller() -> None:
    env = env_of(KAFKA_SERVICE)
    assert {"broker", "controller"} <= set(env["KAFKA_PROCESS_ROLES"].split(","))
    assert not any(k.startswith("KAFKA_ZOOKEEPER") for k in env)
    assert not any("zookeeper" in name or "zookeeper" in str(s.get("image", ""))
                   for name, s in SERVICES.items())
    # The node votes for itself, on a listener that is the controller listener.
    node = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1 and voters[0].startswith(f"{node}@")
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    listener_ports = {name: url.rsplit(":", 1)[1] for name, url in
                      (item.split("://") for item in env["KAFKA_LISTENERS"].split(","))}
    assert voters[0].rsplit(":", 1)[1] == listener_ports[controller]
    assert controller not in env["KAFKA_ADVERTISED_LISTENERS"], "controllers are not advertised to clients"
    # One broker: every replication factor must be 1 or topics cannot be created.
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1", key


def test_infrastructure_has_healthchecks_and_named_volumes() -> None:
    assert "kafka-broker-api-versions.sh" in str(SERVICES[KAFKA_SERVICE]["healthcheck"]["test"])
    assert "pg_isready" in str(SERVICES[DB_SERVICE]["healthcheck"]["test"])
    declared = set(COMPOSE.get("volumes") or {})
    for service in (KAFKA_SERVICE, DB_SERVICE):
        sources = set(volumes_of(service).values())
        assert sources and sources <= declared, f"{service} keeps its data in a declared named volume"


# --- (b) environment: only names Settings reads, and what each service needs ---------


def test_every_runstream_name_is_a_setting() -> None:
    known = Settings.env_names()
    for service in SERVICES:
        unknown = {k for k in env_of(service) if k.startswith("RUNSTREAM_")} - known
        assert not unknown, f"{service}: {sorted(unknown)} are not read by runstream.settings"
    in_dockerfile = {m.group(1) for word, args in dockerfile_instructions() if word == "ENV"
                     for m in re.finditer(r"(RUNSTREAM_\w+)=", args)}
    assert in_dockerfile <= known


@pytest.mark.parametrize("service", OURS)
def test_services_get_the_settings_they_need(service: str) -> None:
    assert NEEDS[service] <= set(env_of(service))


# --- (c) every command is a real subcommand ------------------------------------------


@pytest.mark.parametrize("service", OURS)
def test_command_is_a_runstream_subcommand(service: str) -> None:
    cmd = command_of(service)
    assert cmd[0] in PYPROJECT["project"]["scripts"], "the console script pip installs"
    result = CliRunner().invoke(app, [*cmd[1:], "--help"])
    assert result.exit_code == 0, f"`{' '.join(cmd)} --help` failed:\n{result.output}"


# --- (d) processors scale; the one-shot and the dependencies are right ----------------


def test_processor_is_scalable() -> None:
    processor = SERVICES["processor"]
    assert "container_name" not in processor, "a fixed name allows one container only"
    assert all(published is None for published, _ in ports_of("processor")), \
        "a host port can be bound by one container only"


def test_our_services_share_one_image_built_here() -> None:
    assert DOCKERFILE.is_file()
    for service in OURS:
        build = SERVICES[service]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (COMPOSE_FILE.parent / context).resolve() == REPO
    assert len({SERVICES[s].get("image") for s in OURS}) == 1, "one image name, built once"


def test_dependencies() -> None:
    for name in SERVICES:
        for dep, condition in depends_on(name).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{dep} has no healthcheck to wait for"
    # `restart: no` unquoted is YAML false, which compose rejects; the one-shot must not restart.
    assert SERVICES["migrate"]["restart"] == "no"
    assert depends_on("migrate") == {DB_SERVICE: "service_healthy", KAFKA_SERVICE: "service_healthy"}
    for service in OURS:
        if service == "migrate":
            continue
        deps = depends_on(service)
        if KAFKA in NEEDS[service]:
            assert deps.get(KAFKA_SERVICE) == "service_healthy", service
        if DB in NEEDS[service]:
            assert deps.get("migrate") == "service_completed_successfully", service


def test_http_services_publish_their_settings_port() -> None:
    for service, field in (("api", "api_port"), ("gateway", "gateway_port")):
        port = getattr(Settings.from_env(env_of(service)), field)
        assert port in {target for published, target in ports_of(service) if published is not None}
        assert str(port) in {p for word, args in dockerfile_instructions() if word == "EXPOSE"
                             for p in args.split()}


def test_processor_exposes_its_metrics_port_inside_the_network() -> None:
    """Prometheus scrapes each replica's /metrics; exposed, not published (it scales)."""
    s = Settings.from_env(env_of("processor"))
    assert s.metrics_port, "RUNSTREAM_METRICS_PORT=0 would disable /metrics"
    assert s.metrics_host == "0.0.0.0", "inside a container 127.0.0.1 is unreachable from other containers"
    assert str(s.metrics_port) in {str(p).split("/")[0] for p in SERVICES["processor"].get("expose") or []}
    assert s.metrics_port not in {target for _, target in ports_of("processor")}


def test_blob_store_is_one_shared_volume() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    sources = set()
    for service in [s for s in OURS if BLOBS in NEEDS[s]] + ["processor"]:
        blob_dir = Settings.from_env(env_of(service)).blob_dir
        mounts = volumes_of(service)
        assert blob_dir in mounts, f"{service}: {blob_dir} is not a mounted volume"
        sources.add(mounts[blob_dir])
    assert len(sources) == 1 and sources <= declared


# --- (e) the image contains every package pyproject installs --------------------------


def test_dockerfile_copies_every_package() -> None:
    packages = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())  # the folders installed
    copied = {src.removeprefix("./").split("/")[0] for src in copy_sources()}
    if "." in copied:  # `COPY . .` copies everything
        return
    assert packages <= copied, f"Dockerfile does not COPY {sorted(packages - copied)}"
    # setuptools reads these while building, so they must be in the image too.
    assert "pyproject.toml" in copied
    assert PYPROJECT["project"]["readme"] in copied


def test_dockerfile_shape() -> None:
    instructions = dockerfile_instructions()
    stages = [args for word, args in instructions if word == "FROM"]
    assert stages == ["node:20-slim AS ui", "python:3.11-slim"], "UI built in a Node stage, served from Python"
    assert ("COPY", "--from=ui /ui/dist /opt/runstream/ui") in instructions
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "runs unprivileged"
    assert ("ENTRYPOINT", "[]") in instructions
    assert ("CMD", '["runstream", "--help"]') in instructions


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", ".state", "**/node_modules", "ui/dist", "tests", ".git"} <= ignored


# --- (f) the settings the containers end up with --------------------------------------


@pytest.mark.parametrize("service", OURS)
def test_settings_from_compose_env(service: str) -> None:
    s = Settings.from_env(env_of(service))
    assert s.kafka_bootstrap == "kafka:9092"
    assert s.database_url == "postgresql://runstream:runstream@db:5432/runstream"
    assert s.partitions == 8
    if service in ("api", "gateway"):
        # Inside a container 127.0.0.1 is unreachable from the published port.
        assert s.api_host == s.gateway_host == "0.0.0.0"


def test_settings_point_at_the_compose_services() -> None:
    """Derived from the kafka/db services themselves, so renaming one side is caught."""
    s = Settings.from_env(env_of("processor"))
    kafka_env = env_of(KAFKA_SERVICE)
    advertised = {item.split("://", 1)[1] for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for address in s.kafka_bootstrap.split(","):
        assert address in advertised, f"{address} is not an address Kafka advertises"
        assert address.rsplit(":", 1)[0] == KAFKA_SERVICE
    assert int(kafka_env["KAFKA_NUM_PARTITIONS"]) == s.partitions

    url, db_env = urlsplit(s.database_url), env_of(DB_SERVICE)
    assert url.hostname == DB_SERVICE and (url.port or 5432) == 5432
    assert url.username == db_env["POSTGRES_USER"]
    assert url.password == db_env["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == db_env["POSTGRES_DB"]


# --- the real parser, where it is installed -------------------------------------------


def test_docker_compose_config() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    res = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
