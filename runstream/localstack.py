"""``~/.runstream/config.json``: how a plain ``Workspace()`` finds the local stack.

``runstream services up`` and ``runstream demo`` write it once their stack answers (the
settings a client needs: Kafka's bootstrap, the database, and for the demo the API's and
gateway's URLs and its artifact directory); ``runstream services down`` removes it. So in
a new shell, anywhere, with no ``RUNSTREAM_*`` variables, ``Workspace()`` and
``Workspace.from_config()`` reach the stack that is running, as ``mlflow ui`` or ``aim up``
users expect. It is the last place looked (see ``Workspace.from_config``).

Its keys are :class:`~runstream.settings.Settings` field names plus ``local_stack``, the
stack's state directory: the file counts only while that stack runs, so one left behind by
a crash or a reboot is stale and ignored. ``$HOME`` decides where it is.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runstream.errors import RunstreamError
from runstream.settings import Settings

STACK_KEY = "local_stack"
"""The key holding the state directory of the stack the file describes."""


def config_path() -> Path:
    """``~/.runstream/config.json`` (looked up now: ``$HOME`` may change, e.g. in tests)."""
    return Path.home() / ".runstream" / "config.json"


def write(state_dir: Path, values: dict[str, Any]) -> Path:
    """Record the stack of ``state_dir`` with the client ``values`` (Settings field names).

    Values already recorded for the same stack are kept unless given again (the demo's
    API URL survives a later ``services up`` of its stack); another stack's are replaced."""
    unknown = set(values) - {f.name for f in fields(Settings)}
    if unknown:
        raise ValueError(f"not settings: {sorted(unknown)}")
    state = str(Path(state_dir).resolve())
    current = _load()
    record = {**current, **values} if current.get(STACK_KEY) == state else dict(values)
    record[STACK_KEY] = state
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".config.json.{os.getpid()}.tmp")
    # Owner-only: it may hold the demo's token and the SDK's Kafka password (services up --sasl).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)  # readers never see half a file
    return path


def forget(state_dir: Path) -> bool:
    """Remove the file if it describes the stack of ``state_dir``; True if it did."""
    if _load().get(STACK_KEY) != str(Path(state_dir).resolve()):
        return False
    config_path().unlink(missing_ok=True)
    return True


def running_config() -> dict[str, Any] | None:
    """The recorded settings if the stack they belong to runs now (its Kafka or its API
    accepts a connection), else None. A probe rather than the dev stack's own record: an
    SDK-only install has no ``runstream.devstack``."""
    record = _load(strict=True)
    state = record.pop(STACK_KEY, None)
    known = {f.name for f in fields(Settings)}
    values = {k: v for k, v in record.items() if k in known}
    if not isinstance(state, str) or not any(_answers(a) for a in _addresses(values)):
        return None
    return values


def _addresses(values: dict[str, Any]) -> list[tuple[str, int]]:
    """``(host, port)`` of the recorded Kafka bootstrap servers and API URL."""
    found: list[tuple[str, int]] = []
    for server in str(values.get("kafka_bootstrap", "")).split(","):
        host, _, port = server.strip().rpartition(":")
        if host and port.isdigit():
            found.append((host, int(port)))
    url = urlsplit(str(values.get("api_url", "")))
    if url.hostname and url.port:
        found.append((url.hostname, url.port))
    return found


def _answers(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=0.5).close()
    except OSError:
        return False
    return True


def _load(strict: bool = False) -> dict[str, Any]:
    """The file's record; {} if there is none. A file that is not a JSON object is
    :class:`RunstreamError` when ``strict`` (reading), else as if none (it is rewritten)."""
    path = config_path()
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if strict:
            raise RunstreamError(f"cannot read the local stack's config {path}: {exc}; remove it, "
                                 f"`runstream services up` writes it again") from None
        return {}
    if not isinstance(record, dict):
        if strict:
            raise RunstreamError(f"{path}: expected a JSON object of settings, found {type(record).__name__}")
        return {}
    return record
