"""Schemathesis against the running lab service's own OpenAPI document: every operation, with
data the document allows (positive) and data it forbids (negative), as a student, an instructor
and a lab admin, against the real broker and real twins (so real kit ids, sessions and bookings
exist and the stateful paths are reached).

What must hold for every generated request: no 5xx; the status is one the document lists; the
answer's content type and body are the documented ones (every refusal is {"error": one line});
and a request the document forbids is refused with a 4xx (the server accepts no more than the
document says). Bounded: a fixed number of examples per operation, derandomized, about a minute.
"""

from __future__ import annotations

import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from hardware_kits.kit_runner import KitRunner
from hardware_kits.twins.base import twin_class
from lab_service.api_routes import ROUTES
from tests.conftest import wait_until
from tests.stack import FAST_POLICY, ServiceProcess, call_api, token, with_tokens

pytestmark = pytest.mark.broker

COURSE = "fuzz101"
KITS = {"fuzz-lamp-1": "street-lighting", "fuzz-park-1": "smart-parking"}
USERS = {
    "student": {"name": "stu", "institution": "univ-a", "courses": [COURSE]},
    "teacher": {"name": "tea", "institution": "univ-a", "instructor_of": [COURSE]},
    "admin": {"name": "adm", "institution": "centre", "lab_admin": True},
}
EXAMPLES = 120  # per operation and mode: at most 24 operations x 2 modes x 120 requests
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# JSON values that broke or could break parsers and databases: huge and boundary numbers,
# deep nesting, control characters, odd times. Each replaces one field of a valid body.
HOSTILE = [
    int("1" + "0" * 400),
    -int("9" * 40),
    2**63,
    2**63 - 1,
    2**64,
    1e308,
    -1e308,
    -0.0,
    5e-324,
    "",
    "\x00",
    "x" * 70,
    "2026-13-45T99:99",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-23:59",
    "1e400",
    [],
    {},
    [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]],
    None,
    True,
]
BUDGET_S = 60.0
_spent = {"s": 0.0}


@pytest.fixture(scope="module")
def service(broker, models, state_root):
    running = ServiceProcess(
        broker, state_root, with_tokens(USERS), name="lab-fuzz", settings=FAST_POLICY
    ).start()
    runners: list[KitRunner] = []
    try:
        for kit_id, model in KITS.items():
            status, answer = call_api(
                running.port, "POST", "/api/kits", token("admin"), {"id": kit_id, "model": model}
            )
            assert status == 201, answer
            runners.append(
                KitRunner(
                    kit_id,
                    twin_class(model)(models[model], seed=5),
                    broker.address(f"kit-{kit_id}"),
                    rate_hz=2,
                ).start()
            )

        def online() -> bool:
            kits = call_api(running.port, "GET", "/api/kits", token("admin"))[1]
            return all(k["online"] for k in kits)

        wait_until(online, timeout=15)
        # State for the stateful paths: a session, a waiting entry, a booking.
        for who, kit_id in (("student", "fuzz-lamp-1"), ("teacher", "fuzz-lamp-1")):
            call_api(running.port, "POST", "/api/queue", token(who), {"kit": kit_id})
        yield running
    finally:
        running.stop()
        for runner in runners:
            runner.stop()


@pytest.fixture(scope="module")
def schema(service):
    # The tokens are the test's (a student's, an instructor's, a lab admin's), sent with every
    # request: generated Authorization values would be replaced, so none are generated.
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
    return schemathesis.openapi.from_url(f"{service.url}/api/openapi.json", config=config)


def _hostile(case_index_value: tuple) -> object:
    """A valid case with one body field replaced by a hostile value."""
    case, index, value = case_index_value
    if isinstance(case.body, dict) and case.body:
        keys = sorted(case.body)
        case.body = {**case.body, keys[index % len(keys)]: value}
    return case


def _strategy(operation, mode: schemathesis.GenerationMode) -> st.SearchStrategy:
    """Generated cases; positive ones also aimed at the real kits, and with hostile values."""
    plain = operation.as_strategy(generation_mode=mode)
    if mode is schemathesis.GenerationMode.NEGATIVE:
        return plain
    more = []
    if "{kit_id}" in operation.path:
        more += [
            operation.as_strategy(generation_mode=mode, path_parameters={"kit_id": k}) for k in KITS
        ]
    if operation.body:
        more.append(st.tuples(plain, st.integers(0, 7), st.sampled_from(HOSTILE)).map(_hostile))
    return st.one_of(plain, *more)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.key)
def test_every_operation_answers_as_documented(service, schema, route, mode):
    # Bounded in time on a slow machine too: past the budget, fewer examples (every operation
    # is still tried).
    examples = EXAMPLES if _spent["s"] < BUDGET_S else EXAMPLES // 6
    operation = schema[route.path][route.method]
    if mode == "negative" and not (route.body or route.query or "{" in route.path):
        pytest.skip("the document allows every request of this operation")
    generation = schemathesis.GenerationMode(mode)
    checks = CHECKS + ([negative_data_rejection] if mode == "negative" else [])
    http = requests.Session()
    started = time.monotonic()

    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, generation), who=st.sampled_from(sorted(USERS)))
    def fuzz(case, who: str) -> None:
        case.call_and_validate(
            base_url=service.url,
            session=http,
            headers={"Authorization": f"token {token(who)}"},
            checks=checks,
            timeout=10,
        )

    try:
        fuzz()
    finally:
        http.close()
        _spent["s"] += time.monotonic() - started
