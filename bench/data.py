"""The benchmarks' data: usage events as the generation API sends them (over HTTP), priced ledger
rows written straight into the database (COPY) and their daily rollups, and months.

The HTTP mix follows the pricing page (docs/pricing.md): SD 1.5 and SDXL generations at the table's step counts
and sizes (sometimes portrait, sometimes off-table steps), composition control on some, the add-on
features (upscaling, background removal, captioning, ...) and a rare training, quantity 1-4.
bench/singles.lua mirrors this mix for the wrk phase; keep the two alike. The COPY datasets use
the same features in a few dozen shapes, each priced once with pricing.rules.

Functions that touch the database need Django set up (bench.environment.Bench.activate).
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from core.periods import current_period, period_bounds

from .report import Meter

SD15_SIZES = ((512, 512), (512, 576), (512, 640), (512, 688), (512, 704), (512, 768), (512, 912), (512, 1024))
SDXL_SIZES = ((1024, 1024), (1024, 1152), (1024, 1280), (1024, 1376), (1024, 1408), (1024, 1536), (1024, 1824),
              (1024, 2048))  # fmt: skip
TABLE_STEPS = (30, 50, 100, 150)
OFF_TABLE_STEPS = (20, 25, 40, 75)  # priced as max(steps, 30): exercises the formula, not a lookup
ADD_ONS = (
    ("upscaling", 10),
    ("background_removal", 7),
    ("captioning", 6),
    ("magic_prompt", 3),
    ("detection", 2),
    ("pixelate", 1),
)
_ADD_ON_NAMES = tuple(name for name, _ in ADD_ONS)
_ADD_ON_WEIGHTS = tuple(weight for _, weight in ADD_ONS)


# --- Months -------------------------------------------------------------------------------------


def occurred_window(now: datetime) -> tuple[datetime, datetime]:
    """[start of the current UTC month, a minute ago]: past days of this month, never the future."""
    now = now.astimezone(UTC)
    start = period_bounds(current_period(now))[0]
    end = now - timedelta(minutes=1)
    if end <= start:  # the first minute of a month: the month has no past yet
        end = now
    return start, end


def iso_z(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Events over HTTP ---------------------------------------------------------------------------


class EventFactory:
    """Makes events with ids `<prefix><random hex>-<n>`: unique, and unordered like real ids."""

    def __init__(self, prefix: str, *, seed: int, now: datetime | None = None):
        self.prefix = prefix
        self.rng = random.Random(seed)
        start, end = occurred_window(now or datetime.now(UTC))
        self._start = int(start.timestamp())
        self._span = max(0, int(end.timestamp()) - self._start)
        self.made = 0

    def event(self) -> dict:
        rng = self.rng
        self.made += 1
        instant = datetime.fromtimestamp(self._start + rng.randint(0, self._span), UTC)
        event: dict = {
            "event_id": f"{self.prefix}{rng.getrandbits(48):012x}-{self.made}",
            "occurred_at": iso_z(instant),
        }
        roll = rng.random()
        if roll < 0.70:
            sdxl = rng.random() < 0.45
            width, height = rng.choice(SDXL_SIZES if sdxl else SD15_SIZES)
            if rng.random() < 0.3:
                width, height = height, width  # portrait
            event.update(
                feature="generation",
                model="sdxl" if sdxl else "sd15",
                steps=rng.choice(TABLE_STEPS) if rng.random() < 0.9 else rng.choice(OFF_TABLE_STEPS),
                width=width,
                height=height,
            )
            if rng.random() < 0.15:
                event["composition_control"] = True
        elif roll < 0.998:
            event["feature"] = rng.choices(_ADD_ON_NAMES, _ADD_ON_WEIGHTS)[0]
        else:
            event["feature"] = "training"
        quantity = rng.choice((1, 1, 1, 2, 2, 3, 4))
        if quantity != 1 or rng.random() < 0.5:
            event["quantity"] = quantity
        if rng.random() < 0.05:
            event["spot"] = True
        if rng.random() < 0.6:
            event["metadata"] = {
                "request_id": f"req_{rng.getrandbits(64):016x}",
                "generator_id": f"gen-{rng.randint(1, 40)}",
            }
        return event

    def batch(self, size: int) -> list[dict]:
        return [self.event() for _ in range(size)]


def batch_body(events: list[dict]) -> bytes:
    return json.dumps({"events": events}, separators=(",", ":")).encode()


def training_body(prefix: str, count: int) -> dict:
    """`count` training events ($5.00 each) occurring now."""
    when = iso_z(datetime.now(UTC))
    return {"events": [{"event_id": f"{prefix}-{secrets.token_hex(6)}-{n}", "occurred_at": when, "feature": "training"}
                       for n in range(count)]}  # fmt: skip


# --- Priced shapes and COPY rows ----------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One billable shape, priced once with pricing.rules; rows then reuse its price."""

    feature: str
    model: str = ""
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    composition: bool = False
    weight: float = 1.0


class NoPriceBook(RuntimeError):
    pass


def price_shapes(shapes: list[Shape], at: datetime, quantities) -> tuple[int, list[dict]]:
    """The id of the price book in force `at`, and for each shape its Price per quantity."""
    from pricing.rules import UsageItem, price_item
    from pricing.selectors import price_book_history

    book = price_book_history().at(at)
    if book is None or book.id is None:
        raise NoPriceBook(f"no price book in force on {at:%Y-%m-%d}")
    prices = [
        {q: price_item(book, UsageItem(s.feature, q, s.model, s.steps, s.width, s.height, s.composition))
         for q in quantities}
        for s in shapes
    ]  # fmt: skip
    return book.id, prices


EVENT_COLUMNS = ("workspace_id", "api_key_id", "event_id", "occurred_at", "received_at", "feature", "model", "steps",
                 "width", "height", "composition_control", "spot", "quantity", "metadata", "unit_price", "amount",
                 "price_book_id", "content_hash")  # fmt: skip


def copy_text(values) -> str:
    """COPY's text format of one row (no newline): NULL as \\N, booleans as t/f."""

    def text(value) -> str:
        if value is None:
            return r"\N"
        if isinstance(value, bool):
            return "t" if value else "f"
        return str(value)

    return "\t".join(text(value) for value in values)


def write_rows(vendor: str, rows, count: int, *, chunk: int = 50_000) -> None:
    """Insert `count` rows of EVENT_COLUMNS into usage_usageevent: COPY on PostgreSQL, batched
    INSERTs on SQLite, a transaction per `chunk` rows."""
    from django.db import connection, transaction

    table, columns = "usage_usageevent", ", ".join(EVENT_COLUMNS)
    meter = Meter("events", count, "events", indent=4)
    written = 0
    while written < count:
        rows_now = [row for _, row in zip(range(chunk), rows, strict=False)]
        if not rows_now:
            break
        with transaction.atomic(), connection.cursor() as cursor:
            if vendor == "postgresql":
                with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    copy.write("".join(copy_text(row) + "\n" for row in rows_now))
            else:
                placeholders = ", ".join(["%s"] * len(EVENT_COLUMNS))
                cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", rows_now)
        written += len(rows_now)
        meter.update(written)
    meter.finish(written)


def build_rollups(vendor: str, low: int, high: int, *, arrived: tuple[datetime, datetime] | None = None) -> int:
    """The daily rollups of the events of workspaces low..high, replacing theirs, as ingestion
    keeps them (usage.services: money in micro-dollars); the rows written. With `arrived` (start,
    end): only the events that arrived in [start, end) (PostgreSQL reads that month's partition
    alone), added to the rollups already there, as ingestion adds each batch: a month at a time."""
    from django.db import connection, transaction

    if vendor == "postgresql":
        day, micros, amount = ("(occurred_at AT TIME ZONE 'UTC')::date", "(unit_price * 1000000)::bigint",
                               "sum((amount * 1000000)::bigint)")  # fmt: skip
    else:
        day, micros, amount = ("date(occurred_at)", "CAST(round(unit_price * 1000000) AS INTEGER)",
                               "CAST(round(sum(amount) * 1000000) AS INTEGER)")  # fmt: skip
    dims = (f"workspace_id, {day}, api_key_id, feature, model, coalesce(steps, 0), coalesce(width, 0), "
            f"coalesce(height, 0), composition_control, spot, {micros}")  # fmt: skip
    where, params = "workspace_id BETWEEN %s AND %s", [low, high]
    upsert = ""
    if arrived is not None:
        where += " AND received_at >= %s AND received_at < %s"
        params += list(arrived)
        upsert = (" ON CONFLICT ON CONSTRAINT dailyrollup_unique_key DO UPDATE SET "
                  "quantity = usage_dailyrollup.quantity + excluded.quantity, "
                  "amount_micros = usage_dailyrollup.amount_micros + excluded.amount_micros, "
                  "events = usage_dailyrollup.events + excluded.events")  # fmt: skip
    with transaction.atomic(), connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute("SET LOCAL work_mem = '256MB'")  # one GROUP BY of millions of rows: in memory
        if arrived is None:
            cursor.execute("DELETE FROM usage_dailyrollup WHERE workspace_id BETWEEN %s AND %s", [low, high])
        cursor.execute(
            "INSERT INTO usage_dailyrollup (workspace_id, day, api_key_id, feature, model, steps, width, height, "
            "composition_control, spot, unit_price_micros, quantity, amount_micros, events) "
            f"SELECT {dims}, sum(quantity), {amount}, count(*) FROM usage_usageevent "
            f"WHERE {where} GROUP BY {dims}{upsert}",
            params,
        )
        return cursor.rowcount


# --- The overview's tenant: one busy workspace this month ----------------------------------------

OVERVIEW_SHAPES = [
    *[Shape("generation", "sd15", steps, w, h, comp, weight)
      for steps, sw in ((30, 5), (50, 3), (100, 1), (150, 0.3))
      for (w, h), hw in (((512, 512), 5), ((512, 768), 2), ((768, 512), 2), ((512, 1024), 1), ((640, 640), 0.5))
      for comp, cw in ((False, 0.88), (True, 0.12))
      for weight in [sw * hw * cw]],
    *[Shape("generation", "sdxl", steps, w, h, comp, weight)
      for steps, sw in ((30, 5), (50, 3), (100, 1))
      for (w, h), hw in (((1024, 1024), 5), ((1024, 1536), 2), ((1536, 1024), 1.5), ((1024, 1824), 1), ((2048, 1024), 0.3))
      for comp, cw in ((False, 0.9), (True, 0.1))
      for weight in [sw * hw * cw * 0.6]],
    Shape("upscaling", weight=12),
    Shape("background_removal", weight=8),
    Shape("captioning", weight=7),
    Shape("magic_prompt", weight=6),
    Shape("detection", weight=4),
    Shape("pixelate", weight=2),
    Shape("training", weight=0.05),
]  # fmt: skip
OVERVIEW_QUANTITIES = (1, 1, 1, 2, 4)


def overview_rows(count: int, workspace_id: int, keys: list[int], now: datetime, seed: int):
    """Rows (EVENT_COLUMNS) of `count` events spread over this UTC month up to `now`."""
    book_id, prices = price_shapes(OVERVIEW_SHAPES, now, set(OVERVIEW_QUANTITIES))
    rng = random.Random(seed)
    month = period_bounds(current_period(now))[0]
    span = max(int((now - month).total_seconds()) - 1, 1)
    shape_picks = rng.choices(range(len(OVERVIEW_SHAPES)), weights=[s.weight for s in OVERVIEW_SHAPES], k=count)
    key_weights = (6, 3, 1)[: len(keys)]
    for n, index in enumerate(shape_picks):
        shape = OVERVIEW_SHAPES[index]
        quantity = rng.choice(OVERVIEW_QUANTITIES)
        price = prices[index][quantity]
        occurred = month + timedelta(seconds=rng.randrange(span), microseconds=rng.randrange(1_000_000))
        key = rng.choices(keys, weights=key_weights)[0]
        event_id = f"ob-{n:08d}"
        content = hashlib.sha256(f"{event_id}{occurred}{shape.feature}{quantity}".encode()).hexdigest()
        yield (
            workspace_id, key, event_id, occurred.isoformat(), now.isoformat(), shape.feature, shape.model,
            shape.steps, shape.width, shape.height, shape.composition, False, quantity, "{}", f"{price.unit_price}",
            f"{price.amount}", book_id, content,
        )  # fmt: skip


# --- The close's tenants: many workspaces, one past month -----------------------------------------

SIZE_SKEW = 0.7  # workspace sizes follow 1/rank^0.7: a few big tenants, a long tail of small ones
COPY_COMMIT_ROWS = 500_000  # one transaction per this many rows: an interrupted run loses little


def close_shapes() -> list[Shape]:
    """A few dozen shapes in the proportions of the HTTP mix: 70 % generation (SDXL 45 % of it),
    add-ons by popularity, a rare training."""
    out = []
    for model, sizes, share in (
        ("sd15", ((512, 512), (512, 768), (768, 512), (512, 1024)), 0.55),
        ("sdxl", ((1024, 1024), (1024, 1536), (1024, 1824), (1824, 1024)), 0.45),
    ):
        for steps, step_share in ((30, 0.5), (50, 0.3), (100, 0.15), (25, 0.05)):
            for n, (width, height) in enumerate(sizes):
                size_share = (0.5, 0.2, 0.2, 0.1)[n]
                weight = 70 * share * step_share * size_share
                out.append(Shape("generation", model, steps, width, height, False, weight * 0.85))
                if n < 2:
                    out.append(Shape("generation", model, steps, width, height, True, weight * 0.15 / 0.7))
    for feature, weight in ADD_ONS:
        out.append(Shape(feature, weight=weight * 29.8 / 29))
    out.append(Shape("training", weight=0.2))
    return out


def copy_close_events(keys: dict[int, int], events: int, period: date, seed: int) -> None:
    """COPY `events` rows into usage_usageevent in arrival (time) order, workspaces interleaved:
    each workspace's events are spread over the table as in production. `keys`: workspace id ->
    API key id."""
    from django.db import connection, transaction

    rng = random.Random(seed)
    all_shapes = close_shapes()
    start, end = period_bounds(period)
    book_id, priced = price_shapes(all_shapes, start, range(1, 5))
    dims = [copy_text((s.feature, s.model, s.steps, s.width, s.height, s.composition)) for s in all_shapes]
    prices = [["", *(f"{p[q].unit_price}\t{p[q].amount}" for q in range(1, 5))] for p in priced]
    workspace_ids = sorted(keys)
    rng.shuffle(workspace_ids)  # big tenants anywhere in the id range
    cumulative, total = [], 0.0
    for rank in range(1, len(workspace_ids) + 1):
        total += 1 / rank**SIZE_SKEW
        cumulative.append(total)
    # Each workspace uses a handful to all of the shapes, in the global proportions.
    subsets: dict[int, list] = {}
    for workspace in workspace_ids:
        chosen = rng.sample(range(len(all_shapes)), rng.randint(3, len(all_shapes)))
        weights = [all_shapes[i].weight for i in chosen]
        picks = rng.choices(chosen, weights, k=64)  # a 64-slot urn: one random() per event
        subsets[workspace] = [f"{workspace}\t{keys[workspace]}\t", picks]
    # Every workspace has at least one event; the rest by size.
    owners = list(workspace_ids) + rng.choices(workspace_ids, cum_weights=cumulative, k=events - len(workspace_ids))
    rng.shuffle(owners)
    span = (end - start).total_seconds()
    base = start.timestamp()
    quantities = (1, 1, 1, 2, 2, 3, 4)
    columns = ", ".join(EVENT_COLUMNS)
    meter = Meter("copying events", events, "events")
    done = 0
    block = 50_000  # rows per write; times are sorted within each block and the blocks follow each other
    while done < events:
        with transaction.atomic(), connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY usage_usageevent ({columns}) FROM STDIN") as copy:
                committed_at = done + min(COPY_COMMIT_ROWS, events - done)
                while done < committed_at:
                    n = min(block, committed_at - done)
                    low = done / events * span
                    width = n / events * span
                    instants = sorted(low + rng.random() * width for _ in range(n))
                    out = []
                    for offset, workspace in zip(instants, owners[done : done + n], strict=True):
                        done += 1
                        prefix, picks = subsets[workspace]
                        shape = picks[int(rng.random() * 64)]
                        quantity = quantities[int(rng.random() * 7)]
                        occurred = base + offset
                        received = min(occurred + 0.05 + rng.random() * 3, base + span + 3600)
                        event_id = f"cb-{done:09d}"
                        metadata = (f'{{"request_id": "req_{rng.getrandbits(64):016x}"}}' if rng.random() < 0.5
                                    else "{}")
                        out.append(
                            f"{prefix}{event_id}\t{datetime.fromtimestamp(occurred, UTC).isoformat()}\t"
                            f"{datetime.fromtimestamp(received, UTC).isoformat()}\t{dims[shape]}\t"
                            f"{'t' if rng.random() < 0.05 else 'f'}\t{quantity}\t{metadata}\t"
                            f"{prices[shape][quantity]}\t{book_id}\t"
                            f"{hashlib.sha256(event_id.encode()).hexdigest()}\n"
                        )
                    copy.write("".join(out))
                    meter.update(done)
    meter.finish(done)

