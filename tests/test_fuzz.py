"""Schemathesis against the running query API and ingest gateway, each from its own OpenAPI
document: every operation gets a bounded number of generated requests (valid and invalid),
and every answer must be no 5xx and conform to the document (status, content type,
headers, body schema).

Bounded so the module takes seconds: ``MAX_EXAMPLES`` per operation, derandomized (the
same requests every run, so a failure reproduces), no example database.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import checks

from runstream.ingest import openapi as gateway_openapi
from runstream.query_api import openapi as api_openapi
from runstream.settings import Settings

pytestmark = pytest.mark.timeout(300)

MAX_EXAMPLES = 12
"""Generated requests per operation."""
CHECKS = [
    checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
    checks.response_headers_conformance, checks.response_schema_conformance,
]
"""What every answer must satisfy. Not ``positive_data_acceptance``: a string the schema
allows can still be a 400 by the parameter's grammar (``filter``, ``order_by``, ``as_of``),
which a JSON Schema cannot state; such a 400 must be documented, which the status check sees."""


def fuzz(document: dict[str, Any], base_url: str) -> list[str]:
    """Run every operation of ``document`` against ``base_url``; the failures, one line each."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                             phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @hypothesis.given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            if isinstance(case.query, dict):
                # min_seq of a run that never comes is a documented 504 after wait_ms (the
                # read-your-writes timeout), not a server fault: not generated.
                case.query.pop("min_seq", None)
            case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)

        try:
            check()
        except Exception as exc:  # one operation's failure must not hide the others'
            failures.append(f"{operation.label}: {str(exc)[:2000]}")
    return failures


def test_query_api_conforms_to_its_document_under_fuzzing(services: Settings) -> None:
    failures = fuzz(api_openapi.document(), services.api_url)
    assert not failures, "\n\n".join(failures)


def test_gateway_conforms_to_its_document_under_fuzzing(services: Settings) -> None:
    failures = fuzz(gateway_openapi.document(), services.ingest_url)
    assert not failures, "\n\n".join(failures)
