"""Schemathesis over every operation of the running API, authenticated: no 5xx, nothing off-schema.

The app runs on a real uvicorn in a thread of its own (schemathesis is synchronous), its checks
going to the simulators. Each operation gets positive and negative examples (a bounded number,
so the whole run stays well under a minute); operations on a connection also run against a
real connection of the tenant, so the success paths are exercised, not only the 404s; operations
on a webhook run against a webhook registered for them (its endpoint the discard port on
loopback, so test events fail at once and nothing leaves the machine). Every answer is scanned
for canary secrets as well, the secrets of the webhooks registered here included.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import canary
from api.harness import REFUSED_URL, Threaded, threaded_stack

EXAMPLES = 12


def negative_data_rejected(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's negative-data check, where 413 also counts as rejecting: a fuzzed body of
    escaped characters can outgrow KEYSENTRY_MAX_BODY_BYTES before it breaks a field's rule."""
    if response.status_code == 413:
        return None
    result: bool | None = negative_data_rejection(ctx, response, case)
    return result


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejected,
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Threaded]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KEYSENTRY_MONITOR_WEBHOOK_ALLOW_PRIVATE", "1")  # webhooks to the discard port
        with threaded_stack(tmp, f"sqlite+aiosqlite:///{tmp / 'k.db'}") as served:
            yield served


def _post(live: Threaded, path: str, token: str, body: dict[str, Any]) -> Any:
    reply = requests.post(
        live.base + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


def _webhook(live: Threaded, token: str) -> str:
    made = _post(live, "/v1/webhooks", token, {"url": REFUSED_URL + "/hook"})
    canary.register(made["secret"], f"webhook-secret-of-{made['id']}")
    webhook_id: str = made["id"]
    return webhook_id


def _tenant(live: Threaded) -> tuple[str, str]:
    tenant = _post(live, "/v1/tenants", live.admin, {"name": "fuzzed"})["id"]
    token = _post(live, f"/v1/tenants/{tenant}/tokens", live.admin, {"name": "fuzz"})["token"]
    canary.register(token, f"api-token-of-{tenant}", token[3:])
    return tenant, token


def _explore(strategy: Any, headers: dict[str, str], label: str) -> None:
    """Run EXAMPLES cases of `strategy`; raises the first failure schemathesis finds."""

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=15)
        canary.assert_no_leak(response.text, f"the answer to {label}")
        canary.assert_no_leak(str(dict(response.headers)), f"the headers of {label}")

    run()


def test_every_operation_conforms_and_never_fails_on_the_server(live: Threaded) -> None:
    tenant, token = _tenant(live)
    connections = [
        _post(live, "/v1/connections", token, live.keys[name].add(name))["connection"]["id"]
        for name in ("bybit", "okx", "kucoin")
    ]
    # the webhooks fuzzed on a webhook's id are another tenant's: POST /v1/webhooks may fill the
    # first tenant's quota (20) with what it generates
    _, hooks_token = _tenant(live)
    schema = schemathesis.openapi.from_url(live.base + "/openapi.json")
    failures: list[str] = []
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        admin = operation.path.startswith("/v1/tenants")
        caller = live.admin if admin else hooks_token if "{webhook_id}" in operation.path else token
        headers = {"Authorization": f"Bearer {caller}"}
        fixed: list[dict[str, Any] | None] = [None]
        if "{connection_id}" in operation.path:
            fixed += [{"connection_id": cid} for cid in connections]
        if "{tenant_id}" in operation.path:
            fixed.append({"tenant_id": tenant})
        if "{webhook_id}" in operation.path:  # one of its own per operation: DELETE removes it
            fixed.append({"webhook_id": _webhook(live, hooks_token)})
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for path_parameters in fixed:
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
                try:
                    _explore(strategy, headers, operation.label)
                    ran += 1
                except Unsatisfiable:
                    continue  # negative examples of an operation that takes no input: none exist
                except Exception as e:  # collect every operation's failure, then report them all
                    failures.append(f"{operation.label} ({mode.value}, {path_parameters}): {e}"[:3000])
    assert ran >= 21, f"only {ran} operation runs: did the schema lose operations?"
    assert not failures, "\n\n".join(failures)
