"""MLflow's wire format: its errors, ids, request fields and the JSON of its entities.

MLflow's REST API is protobuf over JSON (``mlflow/protos/service.proto``): field names
in snake_case, int64 as numbers (its clients also send them as strings), doubles that
are not finite as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, times in epoch
milliseconds. Errors are ``{"error_code": ..., "message": ...}`` with the matching status.
"""

from __future__ import annotations

import base64
import functools
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from runstream.query_api.errors import HttpError, json_response
from runstream.schemas.events import experiment_stream_id

DEFAULT_EXPERIMENT = "Default"
"""The experiment MLflow calls ``"0"``: it always exists."""
DEFAULT_EXPERIMENT_ID = "0"

STATUS_TO_MLFLOW = {"running": "RUNNING", "completed": "FINISHED", "failed": "FAILED", "canceled": "KILLED"}
STATUS_FROM_MLFLOW = {"RUNNING": "running", "SCHEDULED": "running", "FINISHED": "completed", "FAILED": "failed",
                      "KILLED": "canceled"}

_INTEGER = re.compile(r"-?\d{1,19}")

_CODES = {400: "INVALID_PARAMETER_VALUE", 404: "RESOURCE_DOES_NOT_EXIST", 409: "RESOURCE_CONFLICT",
          413: "INVALID_PARAMETER_VALUE", 422: "INVALID_PARAMETER_VALUE", 501: "NOT_IMPLEMENTED",
          503: "TEMPORARILY_UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class MlflowError(HttpError):
    """An error answered in MLflow's shape; ``error_code`` is MLflow's name for it."""

    def __init__(self, status: int, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code or _CODES.get(status, "INTERNAL_ERROR")


def invalid(message: str) -> MlflowError:
    return MlflowError(400, message, "INVALID_PARAMETER_VALUE")


def missing(message: str) -> MlflowError:
    return MlflowError(404, message, "RESOURCE_DOES_NOT_EXIST")


def exists(message: str) -> MlflowError:
    return MlflowError(400, message, "RESOURCE_ALREADY_EXISTS")  # 400, as MLflow answers it


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def mlflow_errors(handler: Handler) -> Handler:
    """Answer the handler's errors in MLflow's shape (any of ours: its status's code)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except HttpError as exc:
            code = exc.error_code if isinstance(exc, MlflowError) else _CODES.get(exc.status, "INTERNAL_ERROR")
            response = json_response({"error_code": code, "message": exc.message}, status=exc.status)
            if exc.status == 503:
                response.headers["Retry-After"] = "5"
            return response

    return wrapped


# ---------------------------------------------------------------- requests


async def body(request: web.Request) -> dict[str, Any]:
    """The request's fields: the JSON body of a POST/PATCH, the query of a GET (a repeated
    parameter as a list)."""
    if request.method in ("GET", "HEAD"):
        out: dict[str, Any] = {}
        for key in request.query:
            values = request.query.getall(key)
            out[key] = values if len(values) > 1 else values[0]
        return out
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    return data


def text(data: Mapping[str, Any], name: str, *, required: bool = True, default: str | None = None) -> str | None:
    """A string field (a one-element list from a query string counts)."""
    value = data.get(name)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None or value == "":
        if required:
            raise invalid(f"Missing value for required parameter '{name}'.")
        return default
    if not isinstance(value, str):
        raise invalid(f"Invalid value {value!r} for parameter '{name}': expected a string")
    return value


def texts(data: Mapping[str, Any], name: str) -> list[str]:
    """A repeated string field (a JSON list, or one or more query parameters)."""
    value = data.get(name)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise invalid(f"Invalid value {value!r} for parameter '{name}': expected a list of strings")
    return values


def integer(data: Mapping[str, Any], name: str, default: int | None = None, lo: int = -(2**63),
            hi: int = 2**63 - 1) -> int | None:
    """An int64 field, given as a number or a numeric string."""
    value = data.get(name)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None or value == "":
        return default
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _INTEGER.fullmatch(value):
        number = int(value)
    if number is None or not lo <= number <= hi:
        raise invalid(f"Invalid value {value!r} for parameter '{name}': expected an integer in [{lo}, {hi}]")
    return number


def double(value: Any, name: str) -> float:
    """A double field: a number, or ``"NaN"``/``"Infinity"``/``"-Infinity"`` (or a numeric string)."""
    if isinstance(value, bool) or value is None:
        raise invalid(f"Invalid value {value!r} for parameter '{name}': expected a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid value {value!r} for parameter '{name}': expected a number") from None


def run_uuid(data: Mapping[str, Any]) -> uuid.UUID:
    """``run_id`` (or the older ``run_uuid``) as a UUID; a malformed one is not found."""
    raw = text(data, "run_id", required=False) or text(data, "run_uuid", required=False)
    if raw is None:
        raise invalid("Missing value for required parameter 'run_id'.")
    return parse_run_id(raw)


def parse_run_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise missing(f"Run with id={raw} not found") from None


def page_offset(token: str | None) -> int:
    """The offset a ``page_token`` stands for (tokens are opaque to clients)."""
    if not token:
        return 0
    try:
        offset = orjson.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
        if isinstance(offset, int) and offset >= 0:
            return offset
    except (ValueError, TypeError, KeyError):
        pass
    raise invalid(f"Invalid page token {token!r}")


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"offset": offset})).decode()


# ---------------------------------------------------------------- ids and entities


def experiment_id(key: str) -> str:
    """MLflow's id of the experiment whose key (the name its runs refer to) is ``key``."""
    return DEFAULT_EXPERIMENT_ID if key == DEFAULT_EXPERIMENT else uuid.UUID(experiment_stream_id(key)).hex


def ms(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)


def artifact_uri(experiment_key: str, run_id: uuid.UUID) -> str:
    """``mlflow-artifacts:/<experiment id>/<run id>/artifacts``: the proxied store
    (``query_api.mlflow_artifacts``) resolves it against the tracking URI."""
    return f"mlflow-artifacts:/{experiment_id(experiment_key)}/{run_id.hex}/artifacts"


def number(value: Any) -> Any:
    """A metric value as MLflow's JSON double (non-finite as its strings)."""
    if isinstance(value, dict):  # schemas.values' {"f": ...}
        return value["f"]
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return float(value)


def experiment_json(key: str, created_at: datetime | None, display_name: str | None, deleted_at: datetime | None,
                    tags: Mapping[str, str], updated_at: datetime | None) -> dict[str, Any]:
    exp_id = experiment_id(key)
    out = {
        "experiment_id": exp_id,
        "name": display_name or key,
        "artifact_location": f"mlflow-artifacts:/{exp_id}",
        "lifecycle_stage": "deleted" if deleted_at is not None else "active",
        "tags": [{"key": k, "value": v} for k, v in sorted(tags.items())],
    }
    if created_at is not None:
        out["creation_time"] = ms(created_at)
        out["last_update_time"] = ms(updated_at or created_at)
    return out


def run_info(row: Mapping[str, Any], tags: Mapping[str, str | None]) -> dict[str, Any]:
    rid: uuid.UUID = row["run_id"]
    info = {
        "run_id": rid.hex,
        "run_uuid": rid.hex,
        "run_name": row["name"] or "",
        "experiment_id": experiment_id(row["experiment"]),
        "user_id": tags.get("mlflow.user") or "",
        "status": STATUS_TO_MLFLOW.get(row["status"], "RUNNING"),
        "start_time": ms(row["started_at"]),
        "artifact_uri": artifact_uri(row["experiment"], rid),
        "lifecycle_stage": "deleted" if row["deleted_at"] is not None else "active",
    }
    if row["ended_at"] is not None:
        info["end_time"] = ms(row["ended_at"])
    return info


def run_json(run: Mapping[str, Any]) -> dict[str, Any]:
    """MLflow's ``Run`` from :func:`queries.mlflow_runs`'s entry: latest metrics only
    (numeric ones: MLflow's values are doubles), params, tags."""
    tags = run["tags"]
    metrics = [{"key": name, "value": number(v), "timestamp": int(t * 1000), "step": step}
               for name, v, t, step in run["metrics"] if v is not None and not isinstance(v, str)]
    return {
        "info": run_info(run["row"], tags),
        "data": {
            "metrics": metrics,
            "params": [{"key": k, "value": v} for k, v in run["params"].items()],
            "tags": [{"key": k, "value": v or ""} for k, v in tags.items()],
        },
        "inputs": {"dataset_inputs": []},
    }
