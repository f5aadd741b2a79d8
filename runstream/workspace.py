"""``Workspace``: where events go and where reads come from."""

from __future__ import annotations

import hashlib
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import aiohttp
import orjson

from runstream import localstack
from runstream.api import ApiClient
from runstream.blobstore import LocalBlobStore
from runstream.errors import RunstreamError
from runstream.reader import reader
from runstream.sender import Sender, close_sender, sender_for
from runstream.settings import ClientSettings, Settings

if TYPE_CHECKING:
    from runstream.run import Run

CONFIG_FILES = ("runstream.json", ".runstream/config.json")


class Workspace:
    """``Workspace(url=..., token=...)`` or ``Workspace.from_config()``; unset values come
    from ``RUNSTREAM_*`` environment variables, then defaults (see runstream.settings).
    With neither ``url``, ``settings`` nor any ``RUNSTREAM_*`` setting in the environment,
    a running local stack's ``~/.runstream/config.json`` (``runstream services up`` or
    ``runstream demo``) comes before the defaults: ``Workspace()`` finds that stack."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 settings: ClientSettings | None = None, **overrides: Any) -> None:
        if url is not None:
            overrides["api_url"] = url
        elif settings is None and not Settings.env_is_set():
            overrides = {**(localstack.running_config() or {}), **overrides}
        overrides = _client_half(overrides)
        if settings is None:
            settings = ClientSettings.from_env(**overrides)
        elif overrides:
            settings = replace(settings, **overrides)
        if token is not None:
            settings = replace(settings, token=token)
        self.settings: ClientSettings = settings
        self.token = settings.token or None

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, **overrides: Any) -> Workspace:
        """Read a JSON config whose keys are settings field names (and ``token``; the services'
        settings may be there too, for a file shared with them: the SDK reads its half). Looked up
        in this order, the first found wins: ``path``; ``runstream.json`` or
        ``.runstream/config.json`` from the current directory upwards; ``RUNSTREAM_*``
        environment variables (no file); ``~/.runstream/config.json`` of a running local
        stack (written by ``runstream services up`` / ``runstream demo``, removed by
        ``runstream services down``). A config file's values win over the environment."""
        file = Path(path) if path is not None else _find_config()
        values: dict[str, Any] = {}
        if file is not None:
            try:
                values = orjson.loads(file.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise RunstreamError(f"cannot read workspace config {file}: {exc}") from None
            known = {f.name for f in fields(Settings)} | {"token"}
            unknown = set(values) - known
            if unknown:
                raise RunstreamError(f"{file}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        elif path is None and not Settings.env_is_set():
            values = localstack.running_config() or {}
            if not values:
                raise RunstreamError(f"no workspace config found ({' or '.join(CONFIG_FILES)} from {Path.cwd()} "
                                     f"upwards), no RUNSTREAM_* variables set and no running local stack "
                                     f"({localstack.config_path()}; start one with `runstream services up`)")
        token = values.pop("token", None)
        return cls(token=token, settings=ClientSettings.from_env(**_client_half({**values, **overrides})))

    @property
    def _sender(self) -> Sender:
        return sender_for(self.settings)

    @property
    def _api(self) -> ApiClient:
        return ApiClient(reader(), self.settings.api_url, self.token)

    def _store_blob(self, stream: BinaryIO, run_id: str | None = None) -> tuple[str, int]:
        """Put bytes in the artifact store: the shared directory, or via the gateway over HTTP.
        With the gateway unreachable the bytes of ``run_id``'s artifact go to its outbox
        folder and are uploaded before the event that refers to them."""
        if self.settings.transport != "http":
            return LocalBlobStore(self.settings.blob_dir).put_stream(stream)
        data = stream.read()
        sha = hashlib.sha256(data).hexdigest()
        url = f"{self.settings.ingest_url.rstrip('/')}/api/v1/blobs/{sha}"
        sender = self._sender

        async def put(session: Any) -> None:
            async with session.put(url, data=data, timeout=aiohttp.ClientTimeout(total=60, sock_connect=10)) as resp:
                if resp.status >= 500:
                    raise ConnectionError(f"gateway answered {resp.status}: {await resp.text()}")
                if resp.status >= 400:
                    raise RunstreamError(f"artifact upload failed ({resp.status}): {await resp.text()}")

        if run_id is not None and sender.down:
            return sender.store_blob_in_outbox(run_id, data)
        try:
            sender.call(put, timeout=None)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if run_id is None:
                raise RunstreamError(f"artifact upload failed: {exc}") from exc
            sender.report_outage(exc)
            return sender.store_blob_in_outbox(run_id, data)
        return sha, len(data)

    def get_run(self, run_id: str) -> Run:
        """Azure ML's ``Workspace.get_run``: the run ``run_id`` opened for reading (see ``Run.get``)."""
        from runstream.run import Run

        return Run.get(self, run_id)

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued and stop this process's sender (done at exit anyway); waits
        at most ``timeout`` (default ``settings.delivery_timeout``), then leaves what is
        undelivered in the outbox (``settings.spool_dir``) for ``runstream sync``."""
        close_sender(self.settings, timeout)

    def __repr__(self) -> str:
        return f"Workspace(api_url={self.settings.api_url!r}, transport={self.settings.transport!r})"


def _find_config() -> Path | None:
    here = Path.cwd()
    home = localstack.config_path().resolve()  # found from inside $HOME it is still the local stack's: last
    for directory in (here, *here.parents):
        for name in CONFIG_FILES:
            if (directory / name).is_file() and (directory / name).resolve() != home:
                return directory / name
    return None


_SERVICE_ONLY = frozenset(f.name for f in fields(Settings)) - frozenset(f.name for f in fields(ClientSettings))


def _client_half(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the services' settings (unknown names are kept, to be refused)."""
    return {k: v for k, v in values.items() if k not in _SERVICE_ONLY}
