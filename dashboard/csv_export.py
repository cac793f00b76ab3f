"""Writing CSV that is safe to open in a spreadsheet (issue 9, finding 4: CSV formula injection).

Every CSV the product writes (the events and rollups exports, a statement's CSV) goes through
`csv_lines`. Text that a workspace (or anyone holding one of its API keys) controls, such as an
event id, an API key's name or a statement line's description, could start with `=`, `+`, `-`,
`@`, a tab, a carriage return or a line feed, and Excel, LibreOffice and Google Sheets would run
it as a formula (`=HYPERLINK(...)`, `=WEBSERVICE(...)`, `-2+3`). So:

* every *text* cell (a `str`) that starts with one of those characters is written with a single
  quote in front (`'=HYPERLINK(...)`, `'-2+3`): spreadsheets show it as text, and a program
  reading the CSV can strip the one leading quote to get the value back (OWASP's advice);
* *numbers* are passed as numbers (`int`, `Decimal`) and written as they are, so that amounts
  such as `-0.500000` (a free-tier credit on a statement) stay numbers a spreadsheet can sum. A
  number never carries text: it is written by `str(Decimal)`/`str(int)`, digits, a sign and a dot.

Producers therefore hand over amounts as `Decimal` (see `money`), counts as `int`, and
everything else as `str`. `bool` is written `true`/`false`, `None` as an empty cell.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from decimal import Decimal

from core.money import MONEY

# What makes a spreadsheet read a cell as a formula (OWASP "CSV Injection"), and line feed too.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")
# Full-width forms that some spreadsheets normalise to the above.
FORMULA_PREFIXES += ("＝", "＋", "－", "＠")


def neutralise(text: str) -> str:
    """`text`, with a single quote in front when a spreadsheet would take it for a formula."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def money(value: Decimal, places: Decimal = MONEY) -> Decimal:
    """An amount as the CSV writes it: a Decimal with fixed places, never in exponent form."""
    amount = Decimal(value).quantize(places)
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    return amount


def cell(value) -> str | int | Decimal:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")  # never 1E+3: digits, sign, dot
    return neutralise(str(value))


class _Echo:
    """csv.writer writes to it; it hands the line back, for streaming."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[Iterable], lines_per_chunk: int = 1000) -> Iterator[str]:
    """The rows as CSV text, `lines_per_chunk` lines at a time (for a StreamingHttpResponse),
    every cell made safe by `cell`."""
    writer = csv.writer(_Echo())
    chunk: list[str] = []
    for row in rows:
        chunk.append(writer.writerow([cell(value) for value in row]))
        if len(chunk) >= lines_per_chunk:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)
