"""Issue 9, finding 2, proved by Hypothesis: any JSON value in any field or position of an event
(or of a quote), and any bytes as a body, never give a 5xx; the batch's other, valid events are
stored; every answer fits the served OpenAPI schema. A 400 only ever answers a body with a
body-level problem (usage.parsers): a non-finite number, an integer of more than 4,300 digits,
nesting deeper than 32, or a body that is not an event, a list or {"events": [...]}.

Bounded for `make test` (a few seconds); MB_SOAK=1 runs ten times as many examples, at random.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import event
from tests.usage.openapi import assert_matches_schema
from usage.models import UsageEvent
from usage.parsers import MAX_DEPTH, MAX_INT_DIGITS
from usage.validation import KNOWN_FIELDS

SOAK = bool(os.environ.get("MB_SOAK"))
FUZZ = settings(
    max_examples=1000 if SOAK else 80,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not SOAK,
)
_ids = itertools.count(1)

# Text with everything Unicode and JSON allow: lone surrogates, NUL and other controls too.
any_text = st.text(st.characters(exclude_categories=()), max_size=20) | st.sampled_from(
    ["\ud800", "a\udfffb", "\x00", "", " ", "generation", "sd15", "[{", '"', "\\", "\u2028", "😀"]
)
instants = st.sampled_from(
    [
        "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z", "2026-11-20T12:00:00", "2026-11-20T12:00:00+23:59", "2026-02-30T00:00:00Z",
        "2026-11-20T12:00:00.123456789Z", "2026-11-20", "2026-W47-5T12:00Z", "20261120T120000Z",
        "2026-11-20T12:00:00Z",
    ]
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**4299), max_value=10**4299),  # up to MAX_INT_DIGITS (past it: a 400)
    st.floats(),  # NaN and ±Infinity included: a 400
    st.sampled_from([0, 1, -1, 64, 8192, 100_000, 100_001, 1e300, -0.0, 0.5, 2**63, 2**64 + 1, 1e-320]),
)
scalars = st.none() | st.booleans() | numbers | any_text | instants
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12,
)
# Occasionally nested past MAX_DEPTH: a 400.
deep_values = st.integers(min_value=MAX_DEPTH - 3, max_value=MAX_DEPTH + 3).map(
    lambda depth: json.loads("[" * depth + "1" + "]" * depth)
)
any_value = json_values | deep_values
field_names = st.sampled_from(sorted(KNOWN_FIELDS)) | any_text


def body_problem(value: Any, depth: int) -> bool:
    """Whether `value`, sent as JSON at nesting level `depth` (the body's outermost array or object
    is at level 1), makes the body as a whole unreadable (usage.parsers)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return len(str(abs(value))) > MAX_INT_DIGITS
    if isinstance(value, list | dict):
        if depth > MAX_DEPTH:
            return True
        items = value.values() if isinstance(value, dict) else value
        return any(body_problem(item, depth + 1) for item in items)
    return False


@st.composite
def hostile_events(draw) -> Any:
    """A valid event with fields changed, added or removed, or any JSON value at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(any_value)
    body = event(event_id=f"fuzz-{next(_ids)}")
    for name, value in draw(st.dictionaries(field_names, any_value | instants, max_size=4)).items():
        body[name] = value
    for name in draw(st.lists(st.sampled_from(sorted(body)), max_size=2)):
        body.pop(name, None)
    return body


def post_json(api, path: str, value: Any):
    text = json.dumps(value)  # lone surrogates become "\udxxx" escapes; NaN and Infinity as such
    return api.generic("POST", path, text.encode(), content_type="application/json")


@given(hostile=hostile_events(), position=st.integers(0, 2), wrap=st.booleans())
@FUZZ
def test_any_json_in_any_field_or_position_of_an_event(api, workspace, hostile, position, wrap):
    good = [event(event_id=f"good-{next(_ids)}") for _ in range(2)]
    batch = good[:position] + [hostile] + good[position:]
    response = post_json(api, "/api/v1/events", {"events": batch} if wrap else batch)
    answer = assert_matches_schema(response, "/api/v1/events")
    if body_problem(hostile, depth=3 if wrap else 2):
        assert response.status_code == 400, answer
        assert not UsageEvent.objects.filter(event_id__in=[g["event_id"] for g in good]).exists()
        return
    assert response.status_code == 200, answer
    results = answer["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    good_results = results[:position] + results[position + 1 :]
    assert [r["status"] for r in good_results] == ["accepted", "accepted"], answer
    assert [r["event_id"] for r in good_results] == [g["event_id"] for g in good]
    stored = set(UsageEvent.objects.filter(workspace=workspace).values_list("event_id", flat=True))
    assert {g["event_id"] for g in good} <= stored
    mine = results[position]
    assert mine["status"] in {"accepted", "rejected", "duplicate", "conflict"}
    assert bool(mine["errors"]) == (mine["status"] in {"rejected", "conflict"}), mine
    if mine["status"] == "accepted":
        assert mine["event_id"] == hostile["event_id"] and mine["event_id"] in stored


@given(hostile=any_value, name=field_names)
@FUZZ
def test_any_json_in_any_field_of_a_quote(api, workspace, hostile, name):
    body = {"feature": "generation", "model": "sd15", "steps": 30, "width": 512, "height": 512, name: hostile}
    response = post_json(api, "/api/v1/quote", body)
    answer = assert_matches_schema(response, "/api/v1/quote")
    assert response.status_code in {200, 400}, answer
    if response.status_code == 400:
        # field errors, unless the body as a whole is at fault
        assert ("detail" in answer and isinstance(answer["detail"], str)) == body_problem(hostile, depth=2), answer
    assert not UsageEvent.objects.exists()


# Bytes: noise, and JSON texts broken at random (a byte flipped, dropped or inserted).
json_texts = st.builds(
    lambda value: json.dumps(value).encode(), st.lists(hostile_events(), min_size=1, max_size=3)
)


@st.composite
def mangled(draw) -> bytes:
    text = bytearray(draw(json_texts))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["flip", "drop", "insert"]))
        if edit == "insert" or at == len(text):
            text[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif edit == "drop":
            del text[at]
        else:
            text[at] = draw(st.integers(0, 255))
    return bytes(text)


@given(body=st.binary(max_size=64) | mangled() | json_texts, path=st.sampled_from(["/api/v1/events", "/api/v1/quote"]))
@FUZZ
def test_any_bytes_as_a_body(api, workspace, body, path):
    before = UsageEvent.objects.count()
    response = api.generic("POST", path, body, content_type="application/json")
    answer = assert_matches_schema(response, path)
    assert response.status_code in {200, 400}, answer
    if path == "/api/v1/quote" or response.status_code == 400:
        assert UsageEvent.objects.count() == before


def test_the_fuzz_holds_on_sqlite_too():
    """`make test` runs on PostgreSQL when it answers: the three fuzz tests above run once more on
    SQLite, in a process of their own (SQLite stores what PostgreSQL refuses, e.g. lone surrogates)."""
    import subprocess
    import sys

    import pytest

    from tests.conftest import on_postgres

    if not on_postgres():
        pytest.skip("this run is on SQLite: the fuzz tests above just ran on it")
    env = dict(os.environ, DATABASE_URL="", REDIS_URL="", MB_SOAK="")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "any_"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout
