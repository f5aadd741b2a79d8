"""SASL/SCRAM and ACLs on the devstack's Kafka (``services up --sasl``), for a shared host.

Three SCRAM-SHA-256 users, bootstrapped into the metadata when the storage is formatted
(KRaft keeps SCRAM credentials there, so they exist before the broker first starts):

* ``runstream-admin``: the brokers' own user (inter-broker) and the only super user;
* ``runstream-service``: the gateway, the processors and ``runstream migrate``: everything
  on the event topic and the processors' consumer group, and Create/Describe on the
  cluster (to create the topic);
* ``runstream-sdk``: a training script's producer: Write and Describe on the event topic,
  nothing else (it cannot read the topic, create or delete topics, or join any group).

The client listener speaks SASL_PLAINTEXT (loopback; use SASL_SSL across machines). The
controller listener uses SASL PLAIN with a static admin user: KRaft controllers cannot
authenticate with SCRAM (its credentials live in the metadata they serve), and an
unauthenticated controller listener would have to make ``ANONYMOUS`` a super user.
``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``: what no ACL allows is
denied. ACLs are added with Kafka's own ``kafka.admin.AclCommand`` once the broker is up.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MECHANISM = "SCRAM-SHA-256"
ADMIN, SERVICE, SDK = "runstream-admin", "runstream-service", "runstream-sdk"
ACL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Credentials:
    """The SCRAM users' passwords (random per stack, kept in the state dir's stack.json)."""

    admin: str
    service: str
    sdk: str

    @classmethod
    def generate(cls) -> Credentials:
        return cls(*(secrets.token_urlsafe(24) for _ in range(3)))

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Credentials:
        return cls(**record)

    def to_record(self) -> dict[str, str]:
        return asdict(self)

    def env(self, user: str) -> dict[str, str]:
        """``RUNSTREAM_*`` variables for a client authenticating as ``user`` (SERVICE or SDK)."""
        password = {ADMIN: self.admin, SERVICE: self.service, SDK: self.sdk}[user]
        return {"RUNSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "RUNSTREAM_KAFKA_SASL_MECHANISM": MECHANISM,
                "RUNSTREAM_KAFKA_SASL_USERNAME": user, "RUNSTREAM_KAFKA_SASL_PASSWORD": password}

    def client_args(self, user: str) -> dict[str, str]:
        """aiokafka keyword arguments authenticating as ``user``."""
        env = self.env(user)
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": MECHANISM, "sasl_plain_username": user,
                "sasl_plain_password": env["RUNSTREAM_KAFKA_SASL_PASSWORD"]}


def _jaas(module: str, user: str, password: str, **users: str) -> str:
    extra = "".join(f' user_{name}="{pw}"' for name, pw in users.items())
    return f'org.apache.kafka.common.security.{module} required username="{user}" password="{password}"{extra};'


def server_properties(creds: Credentials, port: int, controller_port: int) -> dict[str, str]:
    """What ``services up --sasl`` changes in a node's server.properties."""
    return {
        "listeners": f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": _jaas("plain.PlainLoginModule", ADMIN, creds.admin,
                                                                 **{ADMIN: creds.admin}),
        f"listener.name.sasl_plaintext.{MECHANISM.lower()}.sasl.jaas.config":
            _jaas("scram.ScramLoginModule", ADMIN, creds.admin),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN}",
        "allow.everyone.if.no.acl.found": "false",
    }


def scram_format_args(creds: Credentials) -> list[str]:
    """``StorageTool format`` arguments that bootstrap the three SCRAM users."""
    args = []
    for user, password in ((ADMIN, creds.admin), (SERVICE, creds.service), (SDK, creds.sdk)):
        args += ["--add-scram", f"{MECHANISM}=[name={user},password={password}]"]
    return args


def acl_commands(creds: Credentials, bootstrap: str, topic: str, group: str) -> list[list[str]]:
    """``kafka.admin.AclCommand`` argument lists granting the service and the SDK their rights."""
    base = ["--bootstrap-server", bootstrap, "--add", "--force"]
    service = ["--allow-principal", f"User:{SERVICE}"]
    return [
        [*base, *service, "--operation", "All", "--topic", topic, "--group", group],
        [*base, *service, "--operation", "Create", "--operation", "Describe", "--cluster"],
        [*base, "--allow-principal", f"User:{SDK}", "--operation", "Write", "--operation", "Describe",
         "--topic", topic],
    ]


def grant(java_cmd: list[str], creds: Credentials, bootstrap: str, topic: str, group: str, state_dir: Path,
          log: Path) -> None:
    """Add the ACLs (the AclCommand JVMs run side by side; the admin authenticates them)."""
    config = state_dir / "acl-admin.properties"
    config.write_text(f"security.protocol=SASL_PLAINTEXT\nsasl.mechanism={MECHANISM}\n"
                      f"sasl.jaas.config={_jaas('scram.ScramLoginModule', ADMIN, creds.admin)}\n")
    config.chmod(0o600)
    with open(log, "ab") as out:
        procs = [subprocess.Popen([*java_cmd, "kafka.admin.AclCommand", "--command-config", str(config), *args],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
                 for args in acl_commands(creds, bootstrap, topic, group)]
        codes = [p.wait(timeout=ACL_TIMEOUT_S) for p in procs]
    if any(codes):
        raise RuntimeError(f"kafka.admin.AclCommand failed ({codes}); see {log}")
