"""Schemathesis against the served /openapi.json: no 5xx, and every answer fits the schema.

A real `python -m service` on a free port. Every operation in the document gets schema-valid
(positive) and schema-breaking (negative) requests, half of them with the admin token, and
the answers go through schemathesis's checks: not a server error, a documented status code,
a documented content type, a body that fits the documented schema.

The one thing kept out of generated PATCH /v1/config bodies is `fault_rate` (and its stall):
injected 5xx on reads are a designed feature, not a fault, and would drown the signal.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 25}
MIN_REQUESTS = 1000


def tame(case: Any) -> None:
    """Keep the designed fault injection off (see the module docstring)."""
    if case.method.upper() == "PATCH" and isinstance(case.body, dict):
        case.body.pop("fault_rate", None)
        case.body.pop("fault_stall_s", None)


def test_schemathesis_finds_no_5xx_and_no_schema_drift(server_process: Any) -> None:
    # a real (small) delay and retry delay so every status shows up while fuzzing
    # generated POST /v1/session bodies are wrong tokens: without a high AUTH_FAILURES the
    # throttle would answer the rest of the run's admin requests with 429
    server = server_process(
        translation_delay=0.05, workers=8, heartbeat_s=1.0, auth_failures=1_000_000
    )
    with urllib.request.urlopen(server.url + "/openapi.json", timeout=10) as resp:
        document = json.loads(resp.read())
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert labels >= {
        f"{r['method'].upper()} {r['path']}"
        for r in [
            {"method": m, "path": p} for p, methods in document["paths"].items() for m in methods
        ]
    }
    sent: dict[str, int] = dict.fromkeys(labels, 0)
    statuses: dict[int, int] = {}
    http = requests.Session()

    def fuzz(operation: Any, mode: GenerationMode, examples: int) -> None:
        label = f"{operation.method.upper()} {operation.path}"

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode), admin=st.booleans())
        def run(case: Any, admin: bool) -> None:
            tame(case)
            headers = dict(ADMIN) if admin else {}
            response = case.call(base_url=server.url, session=http, headers=headers, timeout=2)
            sent[label] += 1
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            run()
        except Unsatisfiable:
            # negative mode on an operation with nothing to break (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE, label
        except (Exception, BaseExceptionGroup) as exc:  # collected: one report for all
            failures.append(f"{label} ({mode}): {exc}"[:1500])

    failures: list[str] = []
    try:
        for operation in operations:
            for mode, examples in EXAMPLES_PER_OPERATION.items():
                fuzz(operation, mode, examples)
    finally:
        http.close()

    total = sum(sent.values())
    print(f"\nschemathesis: {total} requests; by status {dict(sorted(statuses.items()))}")
    assert not failures, "\n\n".join(failures)
    assert total >= MIN_REQUESTS, sent
    assert all(n > 0 for n in sent.values()), sent
    assert not [s for s in statuses if s >= 500], statuses
    # the server is still up and well
    with urllib.request.urlopen(server.url + "/healthz", timeout=10) as resp:
        assert json.loads(resp.read())["status"] == "ok"


def test_openapi_documents_what_the_server_answers() -> None:
    """The minimal form of what the fuzzing above found (reported to the lead)."""
    from service.api.openapi import build

    paths = build()["paths"]
    missing = []
    for path, methods in paths.items():
        for method, op in methods.items():
            # any route that reads a JSON body answers 400 invalid_json to a malformed one
            if "requestBody" in op and "400" not in op["responses"]:
                missing.append(f"{method.upper()} {path}: 400 invalid_json")
    if "200" not in paths["/v1/jobs"]["post"]["responses"]:
        missing.append("POST /v1/jobs: 200 (an Idempotency-Key replay)")
    sse = paths["/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    if sse.get("schema") == {"type": "string"}:
        missing.append("GET /v1/events: events are JSON objects, the schema says string")
    assert not missing, missing
