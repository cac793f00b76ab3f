"""The one base class of errors a service raises for its caller to act on.

A ServiceError's message is for a person. The API answers it in the error envelope
(config.api.exception_handler): `{"detail": message}`, or `{field: [message]}` when it is about one
input (`field`), or the given per-field `errors`; with `status` (400 unless a subclass says), and
`Retry-After` when `retry_after` is set. Views never catch these to build an answer by hand.
"""

from __future__ import annotations


class ServiceError(Exception):
    status: int = 400
    field: str | None = None

    def __init__(self, message: str = "", *, errors: dict[str, list[str]] | None = None, retry_after: int | None = None):
        super().__init__(message or self.default_message())
        self.errors = errors
        self.retry_after = retry_after

    def default_message(self) -> str:
        return (self.__doc__ or type(self).__name__).strip().splitlines()[0]

    def body(self) -> dict:
        """The JSON an API answers with."""
        if self.errors is not None:
            return self.errors
        if self.field:
            return {self.field: [str(self)]}
        return {"detail": str(self)}
