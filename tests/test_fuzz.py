"""Fuzzing: schemathesis against the live API from its OpenAPI document, hypothesis on the validator."""
from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from contract.jobs import (MAX_TEMPERATURE, MIN_TEMPERATURE, MIN_TOP_P, SINGLE_PRECISION_ONE, Limits,
                           ValidationError, validate_request)


DELIBERATE_503 = {"model_unavailable", "queue_full"}  # documented answers, with Retry-After
# not "unavailable" (store or queue unreachable): Redis is up throughout, so here it hides a bug, as it hid
# the store error of a room change naming no field
AS_DOCUMENTED = [status_code_conformance, content_type_conformance, response_schema_conformance]


@schemathesis.check
def no_server_error(ctx, response, case):
    """Any 5xx is a server error, except a deliberate 503 (no worker for the model, a full queue) said in JSON."""
    headers = {name.lower(): value for name, value in response.headers.items()}  # values: lists of strings
    if response.status_code == 503 and headers.get("retry-after"):
        code = (response.json() or {}).get("error", {}).get("code")
        if code in DELIBERATE_503:
            return None
    return not_a_server_error(ctx, response, case)


@pytest.mark.integration
def test_every_generated_request_gets_a_documented_answer_never_a_server_error(live_stack):
    schema = schemathesis.openapi.from_url(f"{live_stack.url}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 11
    submit = next(op for op in operations if op.method.upper() == "POST" and op.path == "/api/jobs")
    unserved = submit.Case(body={"prompt": "x", "model": "nobody/serves-this"}, media_type="application/json")
    assert unserved.call_and_validate(checks=[no_server_error]).status_code == 503  # deliberate, so not a failure

    # a room and a finished job of this session exist, so generated cases can get past the lookups
    teacher = {"X-Dashboard-Token": live_stack.settings.dashboard_token}
    student = requests.Session()
    room = student.post(f"{live_stack.url}/api/rooms", json={"prompt": "The cat sat"}, headers=teacher).json()
    job = live_stack.wait_done(live_stack.submit(student, prompt="The cat sat", steps=3)["id"])
    existing = {"code": room["code"], "job_id": job["id"]}

    def at_existing(case):
        case.path_parameters = {name: existing[name] for name in case.path_parameters}
        return case

    for operation in operations:
        generated = operation.as_strategy() | operation.as_strategy(schemathesis.GenerationMode.NEGATIVE)
        if operation.path_parameters:
            generated |= operation.as_strategy().map(at_existing)

        @given(case=generated)
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case):
            case.call_and_validate(session=student, headers=teacher, checks=[no_server_error, *AS_DOCUMENTED])

        call()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["prompt", "steps", "top_k", "temperature", "top_p", "seed", "model", "forced_ids",
                               "branch", "other"])


@given(st.dictionaries(field_names, json_values, max_size=8) | json_values)
@settings(max_examples=400, deadline=None)
def test_validator_accepts_or_names_a_field(body):
    limits = Limits()
    try:
        request = validate_request(body, limits)
    except ValidationError as exc:
        assert exc.message and exc.code
        assert exc.field is None or isinstance(body, dict)
        return
    params = request.params
    assert request.prompt.strip() and len(request.prompt) <= limits.max_prompt_chars
    assert 1 <= params.steps <= limits.max_steps and 1 <= params.top_k <= limits.max_top_k
    assert params.temperature == 0 or MIN_TEMPERATURE <= params.temperature <= MAX_TEMPERATURE
    assert MIN_TOP_P <= params.top_p <= 1


@given(st.text(min_size=1, max_size=2000).filter(str.strip).filter(lambda s: "\x00" not in s),
       st.integers(1, 200), st.integers(1, 50), st.just(0.0) | st.floats(MIN_TEMPERATURE, MAX_TEMPERATURE),
       st.floats(MIN_TOP_P, 1))
@settings(max_examples=200, deadline=None)
def test_every_valid_request_is_accepted_unchanged(prompt, steps, top_k, temperature, top_p):
    """Unchanged, but for a top_p that single precision cannot tell from 1: that is 1."""
    request = validate_request({"prompt": prompt, "steps": steps, "top_k": top_k, "temperature": temperature,
                                "top_p": top_p})
    assert request.prompt == prompt
    assert (request.params.steps, request.params.top_k) == (steps, top_k)
    assert request.params.temperature == temperature
    assert request.params.top_p == (1.0 if top_p >= SINGLE_PRECISION_ONE else top_p)
