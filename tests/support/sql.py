"""Every statement of :mod:`query_api.queries` with runnable example parameters.

Tests run each statement on PostgreSQL and on TimescaleDB (test_query_api, test_timescale);
the runs page is a function of its ordering, so two orderings stand in for it here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from runstream.query_api import queries, search

_SEARCH = ("metrics.mse.min < 3300 and (params.alpha >= 0.2 or params.alpha in ('a', 'b')) "
           "or tags.team like 'a%' and status = 'FINISHED' and attributes.start_time > 0 and duration < 5 "
           "and metrics.acc not in (1, 2)")
STATEMENTS: dict[str, str] = {
    **{name: sql for name, sql in vars(queries).items() if name.isupper() and isinstance(sql, str)},
    "RUNS_FILTERED_EXAMPLE": queries.runs_page_sql("metric", "desc", queries.workspace_where("w", None, 13)[0]),
    "RUNS_PAGE_DEFAULT": queries.runs_page_sql("started_at", "desc", queries.workspace_where("w", None, 13)[0]),
    "RUNS_COUNT": queries.runs_count_sql(queries.workspace_where("w", None, 11)[0]),
    "RUNS_SEARCH_EXAMPLE": queries.runs_page_sql("name", "asc",
                                                 queries.workspace_where("w", search.parse(_SEARCH), 13)[0]),
    "RUNS_PARAM_ORDER_EXAMPLE": queries.runs_page_sql("param", "asc", queries.workspace_where("w", None, 13)[0],
                                                      "deleted"),
    "RUNS_BY_TAG": queries.runs_page_sql("tag", "asc", queries.workspace_where("w", None, 13)[0]),
    "RUNS_BY_PARAM": queries.runs_page_sql("param", "desc", queries.workspace_where("w", None, 13)[0]),
    "RUNS_BY_METRIC_MIN": queries.runs_page_sql("metric_min", "asc", queries.workspace_where("w", None, 13)[0]),
    "RUNS_BY_DURATION": queries.runs_page_sql("duration", "desc", queries.workspace_where("w", None, 13)[0]),
    "RUNS_EXPORT": queries.runs_export_sql("metric_max", "asc",
                                           queries.workspace_where("w", search.parse(_SEARCH), 11)[0]),
    "RUNS_EXPORT_KEYS": queries.runs_export_keys_sql(queries.workspace_where("w", None, 11)[0]),
}
"""Statement name -> SQL: the module's upper-case ``str`` constants and two runs pages."""

RUN = uuid.UUID("00000000-0000-7000-8000-000000000001")
_RUNS_ARGS = (
    ["exp"], ["running", "completed"], "id", RUN, ["team", "lr"], [None, "0.1"],
    ["mse", "acc"], ["<", ">="], [0.3, 0.9], "mse",
)
EXAMPLE_PARAMS: dict[str, tuple[Any, ...]] = {
    "READY": (),
    "EXPERIMENTS": ("default",),
    "EXPERIMENT_NAMES": (["exp"], "default"),
    "RUN_BY_ID": (RUN, "default"),
    "RUNS_BY_IDS": ([RUN], "default"),
    "RUN_LAST_SEQ": (RUN, "default"),
    "RUN_WORKSPACES": ([RUN],),
    "TOKEN_INSERT": ("0123456789ab", "default", "read", None, "scrypt:n=16384,r=8,p=1", b"salt", b"hash", None),
    "TOKEN_BY_ID": ("0123456789ab",),
    "TOKENS_LIST": (None,),
    "TOKEN_REVOKE": ("0123456789ab", "runstream_tokens"),
    "DEAD_LETTERS_UP_TO": (RUN, 10),
    "RUN_TREE": (RUN, "default"),
    "TAGS_FOR_RUNS": ([RUN],),
    "SUMMARIES_FOR_RUNS": ([RUN], ["mse"]),
    "POINTS_FOR": ([RUN], ["mse"]),
    "TABLE_ROWS_FOR": ([RUN], ["t"]),
    "VECTOR_POINTS": (RUN, "mse", 0, 100),
    "VECTOR_BOUNDS": (RUN, "mse", 0, 100),
    "VECTOR_BUCKETS": (RUN, "mse", 0, 100, 10),
    "VECTOR_AT_STEPS": (RUN, "mse", [0, 50, 100]),
    "VECTOR_ROLLUP_BUCKETS": (RUN, "mse", 4, 0, 10, 0, 175, 0, 64),
    "SUMMARY_ONE": (RUN, "mse"),
    "TABLE_ROWS": (RUN, "t"),
    "ARTIFACTS": (RUN,),
    "ARTIFACT": (RUN, "outputs/model.pkl"),
    "EVENTS_PAGE": (RUN, -1, 100),
    "HISTORY_PAGE": (RUN, -1, 100, ["run.status"]),
    "AS_OF_EXTENT": (RUN, 3, datetime(2026, 1, 1, tzinfo=UTC)),
    "AS_OF_EVENTS": (RUN, 3, datetime(2026, 1, 1, tzinfo=UTC)),
    "AS_OF_TS": (RUN, 3),
    "AS_OF_FIRST_AFTER": (RUN, datetime(2026, 1, 1, tzinfo=UTC)),
    "AS_OF_CHILDREN": (RUN, datetime(2026, 1, 1, tzinfo=UTC), "default"),
    "LOG_LINES_PAGE": (RUN, -1, -1, 100),
    "LIVE_EVENTS": (RUN, -1, 500),
    "PARAMS_FOR_RUNS": ([RUN],),
    "ALLOCATE_SEQS": (RUN, 2**62, 2),
    "EXPERIMENT_META_SEQ": ("default", "exp"),
    "ACK_SEQS": (RUN, 2**62),
    "UNSETTLED_RUNS": ([RUN],),
    "UNSETTLED_IN_EXPERIMENTS": (["exp"], "default"),
    "MLFLOW_EXPERIMENTS": ("default",),
    "MLFLOW_RUN_ROWS": ([RUN], "default"),
    "MLFLOW_LATEST_METRICS": ([RUN],),
    "MLFLOW_HISTORY": (RUN, "mse", 100, 0),
    "PARAM_VALUES": (RUN, ["alpha"]),
    "TAG_VALUE": (RUN, "team"),
    "RUN_STATE": (RUN, "default"),
    "RUNS_PARAM_ORDER_EXAMPLE": (["exp"], [], "any", None, [], [], [], [], [], "alpha", 100, 0, "default"),
    "RUNS_BY_TAG": (["exp"], [], "any", None, [], [], [], [], [], "seed", 100, 0, "default"),
    "RUNS_BY_PARAM": (["exp"], [], "any", None, [], [], [], [], [], "alpha", 100, 0, "default"),
    "RUNS_BY_METRIC_MIN": _RUNS_ARGS + (100, 0, "default"),
    "RUNS_BY_DURATION": (["exp"], [], "any", None, [], [], [], [], [], None, 100, 0, "default"),
    "RUNS_EXPORT": (["exp"], [], "any", None, [], [], [], [], [], "mse",
                    *queries.workspace_where("default", search.parse(_SEARCH), 11)[1]),
    "RUNS_EXPORT_KEYS": _RUNS_ARGS + ("default",),
    "METRIC_HISTORY": (RUN, "mse"),
    "METRIC_STEP_BOUNDS": ([RUN], "mse"),
    "METRIC_GROUP_BANDS": ([RUN], ["a"], "mse", 0, 10, 100),
    "LIVE_RUN_STATE": (RUN, "default"),
    "RUNS_COUNT": _RUNS_ARGS + ("default",),
    "RUNS_FILTERED_EXAMPLE": _RUNS_ARGS + (100, 0, "default"),
    "RUNS_PAGE_DEFAULT": (["exp"], [], "any", None, [], [], [], [], [], None, 100, 0, "default"),
    "RUNS_SEARCH_EXAMPLE": (["exp"], [], "any", None, [], [], [], [], [], None, 100, 0,
                            *queries.workspace_where("default", search.parse(_SEARCH), 13)[1]),
}
"""Runnable example parameters for every statement of :data:`STATEMENTS`, keyed by name."""
