"""The strict JSON reader of the ingestion endpoints (POST /api/v1/events and /quote).

A body is refused as a whole (400 with a message, nothing stored) when it is not JSON that every
part of Meterboard can hold, whatever database is behind it:

- not UTF-8, or not JSON (RFC 8259); `NaN`, `Infinity` and `-Infinity` are not JSON numbers
  (Python's json module accepts them; PostgreSQL's json type does not);
- a number beyond what a double holds (`1e400`) or an integer of more than `MAX_INT_DIGITS`
  digits: no field means anything that large, and such numbers cannot be stored or echoed alike
  on SQLite and PostgreSQL;
- arrays and objects nested more than `MAX_DEPTH` deep (the C parser stops at the recursion
  limit, then the parsed value is measured without recursion, before anything else reads it);
- a key that appears twice in one object, anywhere in the body. The JSON RFC leaves such an object's
  meaning to the reader (Python keeps the last value, others the first), so which value the sender
  meant is unknowable: `"quantity": 1, "quantity": 99999` would bill one or the other. A sender
  whose serializer writes duplicate keys is broken as a whole, so the body is refused rather
  than one event rejected.

Only `Content-Type: application/json` (optionally `; charset=utf-8`) is read: anything else is a
415 before the body is looked at. A chunked body (`Transfer-Encoding: chunked`, no
`Content-Length`, as gunicorn hands it on) is read from the WSGI input, at most
`DATA_UPLOAD_MAX_MEMORY_SIZE` (`MB_MAX_BODY_BYTES`) bytes: one byte more is a 413, as it is for a
body whose Content-Length says so (Django checks that one).

What parses is ordinary JSON (dict, list, str, int, finite float, bool, None). Strings may still
hold lone surrogates (`"\\ud800"` is valid JSON text): the event's validation rejects them field
by field (usage.validation), since that is a problem of one event, not of the body.
"""

from __future__ import annotations

import gc
import json
import math
import sys
from typing import Any

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import BaseParser

from config.api import PayloadTooLarge

MAX_DEPTH = 32  # {"events": [{"metadata": {...}}]} is 4; metadata may nest up to 28 more levels
# Python's own limit on int() from text (4,300 unless changed): PostgreSQL's numeric holds more.
MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4_300

_MEDIA_TYPE = "application/json"
_CONTAINERS = frozenset((dict, list))
_READ_CHUNK = 64 * 1024


class BodyError(ValueError):
    """The body is not JSON Meterboard reads; the message says why, for the 400."""


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse a parsed body whose arrays and objects nest deeper than `limit` (the outermost is
    level 1). Iterative: no recursion, whatever the depth. (The C parser itself stops at the
    interpreter's recursion limit with a RecursionError, answered the same way.)"""
    level, containers = 1, [value] if type(value) in _CONTAINERS else []
    while containers:
        if level > limit:
            raise BodyError(f"Body is nested more than {limit} levels deep (arrays and objects).")
        # One comprehension a level (no generator per container): a 1,000-event batch has a
        # thousand objects a level, and this is the body's second walk after the parse.
        containers = [
            item
            for container in containers
            for item in (container.values() if type(container) is dict else container)
            if type(item) in _CONTAINERS
        ]
        level += 1


def _no_constant(name: str) -> Any:
    raise BodyError(f"Body is not valid JSON: {name} is not a JSON number (NaN and Infinity are not JSON).")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"Body has a number out of range: {text[:40]}.")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BodyError(
                    f"Body has a key that appears twice in one object: {key[:40]!r}. Send each key once."
                )
            seen.add(key)
    return result


def loads(raw: bytes) -> Any:
    """Parse a body strictly (see the module's docstring); BodyError says what is wrong."""
    if not raw.strip():
        raise BodyError("Empty body: send a JSON event object or {\"events\": [...]}.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"Body is not valid JSON: not UTF-8 (byte {exc.start}).") from None
    collecting = gc.isenabled()
    gc.disable()  # parsing creates no cycles; with the collector on, 8 MB of "[]," took 7 s instead of 0.9
    try:
        value = json.loads(
            text, parse_constant=_no_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys
        )
    except json.JSONDecodeError as exc:
        raise BodyError(f"Body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.") from None
    except BodyError:
        raise
    except RecursionError:
        raise BodyError(f"Body is nested more than {MAX_DEPTH} levels deep (arrays and objects).") from None
    except ValueError:  # int(): more digits than sys.get_int_max_str_digits() (4,300)
        raise BodyError(f"Body has an integer of more than {MAX_INT_DIGITS:,} digits.") from None
    finally:
        if collecting:
            gc.enable()
    check_depth(value)
    return value


def _is_json_media_type(request) -> bool:
    if (request.content_type or "").strip().lower() != _MEDIA_TYPE:
        return False
    params = {key.lower(): value for key, value in request.content_params.items()}
    return set(params) <= {"charset"} and params.get("charset", "utf-8").strip().lower() in {"utf-8", "utf8"}


def _raw_body(request) -> bytes:
    """The body's bytes: Django's request.body (which enforces the size limit when there is a
    Content-Length), or, for a chunked upload without one, the WSGI input read up to the limit."""
    meta = request.META
    chunked = "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
    if meta.get("CONTENT_LENGTH") or not chunked or "wsgi.input" not in meta:
        return request.body
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    stream, parts, size = meta["wsgi.input"], [], 0
    while limit is None or size <= limit:
        part = stream.read(_READ_CHUNK if limit is None else min(_READ_CHUNK, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if limit is not None and size > limit:
        raise PayloadTooLarge("Request body is larger than the limit; send at most 1,000 events per request.")
    body = b"".join(parts)
    request._body = body  # so that request.body works afterwards (Django reads nothing more)
    return body


class StrictJSONParser(BaseParser):
    """DRF parser for `application/json` bodies, parsed by `loads` (see the module docstring)."""

    media_type = _MEDIA_TYPE

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return loads(stream.read())
        except BodyError as exc:
            raise exceptions.ParseError(str(exc)) from None


def json_body(request) -> Any:
    """The JSON body of a DRF request to an ingestion endpoint: 415 unless it is declared
    `application/json`, 413 past the size limit (chunked or not), 400 with a message if it is
    empty or not strict JSON (see the module docstring)."""
    django_request = request._request
    if not _is_json_media_type(django_request):
        raise exceptions.UnsupportedMediaType(
            django_request.content_type or "(none)",
            detail=(
                f"Unsupported Content-Type {django_request.META.get('CONTENT_TYPE', '')[:80]!r}: "
                "send the body as JSON with 'Content-Type: application/json'."
            ),
        )
    try:
        return loads(_raw_body(django_request))
    except BodyError as exc:
        raise exceptions.ParseError(str(exc)) from None
