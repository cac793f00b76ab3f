"""The event types of the stream, each with a version and the JSON schema of its `data`.

A type's schema is a contract with every receiver: adding an optional field is allowed within a
version; removing or renaming a field, or changing its meaning, is a new version (a new entry in
SCHEMAS, and CURRENT_VERSION moved to it once producers send it). Money is a string with 6
decimal places, in `currency` (USD), never a JSON number. Times are RFC 3339, UTC ("...Z").

Served at GET /api/v1/event-types; README, "Event stream and workspace webhooks".
"""

from __future__ import annotations

from functools import cache

import jsonschema

_MONEY = {"type": "string", "pattern": r"^-?\d+\.\d{6}$", "description": "USD, 6 decimal places"}
_MONEY_OR_NULL = {**_MONEY, "type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_PERIOD = {"type": "string", "pattern": r"^\d{4}-\d{2}$", "description": "UTC calendar month"}
_CURRENCY = {"type": "string", "const": "USD"}


def _object(description: str, properties: dict, required: list[str] | None = None) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "description": description,
        "properties": properties,
        "required": list(properties) if required is None else required,
        # Fields may be added within a version: receivers ignore what they do not know.
        "additionalProperties": True,
    }


_BUDGET = {
    "budget_id": {"type": ["integer", "null"], "description": "null once the budget was deleted"},
    "alert_id": {"type": "integer"},
    "api_key": {"type": ["string", "null"], "description": "the key's display prefix for a per-key budget"},
    "period": _PERIOD,
    "threshold": {"type": "integer", "description": "percent of budget_amount"},
    "budget_amount": _MONEY,
    "spend": _MONEY,
    "currency": _CURRENCY,
}

# (type, version) → the schema of `data`.
SCHEMAS: dict[tuple[str, int], dict] = {
    ("budget.threshold_crossed", 1): _object(
        "Month-to-date spend reached a threshold of a budget (once per budget, month and threshold).",
        _BUDGET,
    ),
    ("budget.forecast_exceeded", 1): _object(
        "The month-end forecast reached a threshold of a budget (once per budget, month and threshold).",
        {**_BUDGET, "forecast": _MONEY},
    ),
    ("usage.anomaly", 1): _object(
        "A day's spend (a whole workspace's, or one API key's) far above its own recent history (once per day and key).",
        {
            "day": {"type": "string", "format": "date", "description": "the UTC day judged"},
            "api_key": {"type": ["string", "null"], "description": "the key's display prefix; null: the whole workspace"},
            "amount": _MONEY,
            "baseline": {**_MONEY, "description": "the usual spend: median of the last 14 days (or of the same weekday), pro-rated for today"},
            "mad": {**_MONEY, "description": "median absolute deviation of that history (with its floor)"},
            "score": {"type": "string", "description": "(amount - baseline) / (1.4826 x mad)"},
            "threshold": {"type": "string", "description": "the score from which it alerts"},
            "fraction_of_day": {"type": "string", "description": "1 for a whole day; less for today so far"},
            "seasonal": {"type": "boolean", "description": "compared with the same weekday"},
        },
    ),
    ("credits.low", 1): _object(
        "The prepaid credit balance fell below its low-balance threshold.",
        {"balance": _MONEY, "threshold": _MONEY, "currency": _CURRENCY},
        required=[],
    ),
    ("credits.recharged", 1): _object(
        "Prepaid credits were added to the balance.",
        {"amount": _MONEY, "balance": _MONEY, "currency": _CURRENCY},
        required=[],
    ),
    ("credits.recharge_failed", 1): _object(
        "An automatic recharge of prepaid credits failed (the card was declined, or none is on file): "
        "auto-recharge is off until a new card is added.",
        {
            "purchase_id": {"type": "integer"},
            "amount": _MONEY,
            "currency": _CURRENCY,
            "reason": {"type": "string"},
            "crossing": {"type": "integer", "description": "the crossing of the threshold it answered"},
        },
    ),
    ("statement.finalized", 1): _object(
        "A month's statement was closed: its total is final.",
        {
            "statement_id": {"type": "integer"},
            "period": _PERIOD,
            "total": _MONEY,
            "tax": _MONEY,
            "amount_due_cents": {"type": "integer", "description": "what is charged, in US cents"},
            "currency": _CURRENCY,
            "finalized_at": _TIME,
        },
    ),
    ("invoice.created", 1): _object(
        "An invoice (or a credit note) was issued for a statement.",
        {
            "number": {"type": "string"},
            "kind": {"type": "string", "enum": ["invoice", "credit_note"]},
            "statement_id": {"type": "integer"},
            "period": _PERIOD,
            "total": _MONEY,
            "currency": _CURRENCY,
            "issued_at": _TIME,
        },
    ),
    ("payment.succeeded", 1): _object(
        "A statement was paid.",
        {
            "statement_id": {"type": "integer"},
            "period": _PERIOD,
            "amount_cents": {"type": "integer", "description": "US cents"},
            "currency": _CURRENCY,
            "paid_at": _TIME,
        },
    ),
    ("payment.failed", 1): _object(
        "A charge of a statement failed; it is retried on the dunning schedule.",
        {
            "statement_id": {"type": "integer"},
            "period": _PERIOD,
            "amount_cents": {"type": "integer", "description": "US cents"},
            "currency": _CURRENCY,
            "failure_message": {"type": "string"},
            "next_retry_at": {**_TIME, "type": ["string", "null"]},
        },
        required=["statement_id", "period", "amount_cents", "currency", "failure_message"],
    ),
}

# The version producers send now, per type.
CURRENT_VERSION: dict[str, int] = {}
for _type, _version in SCHEMAS:
    CURRENT_VERSION[_type] = max(_version, CURRENT_VERSION.get(_type, 0))

EVENT_TYPES: tuple[str, ...] = tuple(CURRENT_VERSION)


class UnknownEventType(ValueError):
    pass


def current_version(event_type: str) -> int:
    try:
        return CURRENT_VERSION[event_type]
    except KeyError:
        raise UnknownEventType(f"Unknown event type {event_type!r}; known: {', '.join(EVENT_TYPES)}.") from None


@cache
def _validator(event_type: str, version: int) -> jsonschema.protocols.Validator:
    schema = SCHEMAS[(event_type, version)]
    return jsonschema.validators.validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())


def data_errors(event_type: str, version: int, data: object) -> list[str]:
    """What is wrong with `data` for this type and version (empty: it fits its schema)."""
    return [f"{'/'.join(map(str, error.path)) or '(data)'}: {error.message}" for error in _validator(event_type, version).iter_errors(data)]


def event_types_list() -> list[dict]:
    """Every type and version with its schema, as GET /api/v1/event-types answers."""
    return [
        {"type": event_type, "version": version, "current": CURRENT_VERSION[event_type] == version,
         "description": schema["description"], "schema": schema}
        for (event_type, version), schema in SCHEMAS.items()
    ]  # fmt: skip
