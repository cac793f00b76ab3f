"""OpenAPI post-processing: every operation documents the errors it can answer.

drf-spectacular documents the success of each operation; the errors every endpoint shares
(bad input, no or a wrong key, a missing scope, an unknown id, a body too large or not JSON, a
throttle, the database unavailable) are added here, with their shape, unless the operation declares its own.
"""

from __future__ import annotations

ERROR = {
    "type": "object",
    "description": (
        "An error: `detail` says what went wrong and what to do; a 400 for bad fields answers "
        "each field's messages under its name instead."
    ),
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}

WHY = {
    "400": "Bad input: the fields' messages, or `detail`.",
    "401": "No API key or session, or an unknown or revoked key.",
    "403": "The key lacks the scope, or the person the role, that the operation needs.",
    "404": "No such object in this workspace.",
    "413": "The body is larger than MB_MAX_BODY_BYTES.",
    "415": "The body is not `application/json`.",
    "429": "Throttled: wait `Retry-After` seconds.",
    "503": "The database is unavailable or read-only for the moment: retry after `Retry-After` seconds (nothing was stored).",
}


def document_errors(result: dict, generator, request, public) -> dict:
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
    reference = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = ["400", "401", "403", "429", "503"]
            if "{" in path:
                codes.append("404")
            if method in ("post", "put", "patch"):
                codes += ["413", "415"]
            for code in codes:
                operation["responses"].setdefault(
                    code, {"description": WHY[code], "content": {"application/json": {"schema": reference}}}
                )
    return result
