"""Price-book versions: new versions price new events; priced history never changes."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from django.contrib.auth import get_user_model

from pricing.models import PriceBook, PriceBookRate
from tests.conftest import event, post_events
from usage.models import UsageEvent


def publish_v2(sd15_base: str = "0.005") -> PriceBook:
    v1 = PriceBook.objects.get(version=1)
    v2 = PriceBook.objects.create(version=2, effective_from=datetime(2026, 11, 22, tzinfo=timezone.utc))
    for rate in v1.rates.all():
        rate.pk = None
        rate.price_book = v2
        if (rate.feature, rate.model) == ("generation", "sd15"):
            rate.unit_price = Decimal(sd15_base)
        rate.save()
    return v2


def test_events_are_priced_by_the_version_in_force_when_they_occurred(api, workspace):
    post_events(api, [event(event_id="before", occurred_at="2026-11-21T23:59:59Z")])
    publish_v2()
    answer = post_events(
        api,
        [
            event(event_id="late-but-old", occurred_at="2026-11-21T12:00:00Z"),
            event(event_id="after", occurred_at="2026-11-22T00:00:00Z"),
        ],
    )
    assert [r["amount"] for r in answer["results"]] == ["0.004000", "0.005000"]
    prices = {e.event_id: (e.unit_price, e.price_book.version) for e in UsageEvent.objects.all()}
    assert prices == {
        "before": (Decimal("0.004"), 1),
        "late-but-old": (Decimal("0.004"), 1),
        "after": (Decimal("0.005"), 2),
    }
    quote = api.post("/api/v1/quote", {"feature": "generation", "model": "sd15", "steps": 30, "width": 512,
                                       "height": 512, "occurred_at": "2026-11-23T00:00:00Z"}, format="json").json()
    assert (quote["amount"], quote["price_book"]) == ("0.005000", 2)


def test_a_rate_edit_is_seen_by_the_next_request(api, workspace):
    v2 = publish_v2()
    rate = PriceBookRate.objects.get(price_book=v2, feature="upscaling")
    rate.unit_price = Decimal("0.040")
    rate.save()  # as the admin's inline does
    answer = post_events(api, [event(feature="upscaling", model=..., steps=..., width=..., height=...,
                                     occurred_at="2026-11-23T00:00:00Z")])
    assert answer["results"][0]["amount"] == "0.040000"


def test_staff_edit_unused_versions_in_the_admin_but_not_used_ones(client, api, workspace):
    staff = get_user_model().objects.create_superuser("staff@mb.test", "staff@mb.test", "pw")
    client.force_login(staff)
    v2 = publish_v2()
    assert client.get("/admin/pricing/pricebook/").status_code == 200
    v1_page = client.get(f"/admin/pricing/pricebook/{PriceBook.objects.get(version=1).pk}/change/")
    v2_page = client.get(f"/admin/pricing/pricebook/{v2.pk}/change/")
    assert v1_page.status_code == v2_page.status_code == 200
    post_events(api, [event(occurred_at="2026-11-10T00:00:00Z")])  # v1 now has priced events
    v1_page = client.get(f"/admin/pricing/pricebook/{PriceBook.objects.get(version=1).pk}/change/").content.decode()
    v2_page = client.get(f"/admin/pricing/pricebook/{v2.pk}/change/").content.decode()
    assert 'name="composition_multiplier"' not in v1_page  # read-only
    assert 'name="composition_multiplier"' in v2_page
    response = client.post(f"/admin/pricing/pricebook/{PriceBook.objects.get(version=1).pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert PriceBook.objects.filter(version=1).exists()


def test_a_version_published_by_another_process_reaches_every_thread_at_once(transactional_db, monkeypatch):
    """E5 under threads: the thread that notices a new version must not mark the cache fresh
    before it has the new history, or the other threads of the process keep pricing with the old
    one (200 of 1,600 concurrent events after effective_from were priced with v1)."""
    import threading
    import time

    from django.db import connection

    import pricing.selectors as selectors

    assert selectors.price_book_history().at(datetime(2026, 11, 23, tzinfo=timezone.utc)).version == 1
    # Another process publishes v2: no save signal reaches this one, only the freshness check.
    cached = selectors._cached
    v2 = publish_v2()
    selectors._cached = cached  # this process's cache, which no save signal cleared
    monkeypatch.setattr(selectors, "_checked_at", 0.0)
    slow_snapshot = selectors._snapshot
    reloading = threading.Event()

    def reload_slowly(book):
        reloading.set()
        time.sleep(0.1)  # a reload that takes a while, as on a busy database
        return slow_snapshot(book)

    monkeypatch.setattr(selectors, "_snapshot", reload_slowly)
    seen: list[int] = []

    def price_one():
        try:
            seen.append(selectors.price_book_history().at(datetime(2026, 11, 23, tzinfo=timezone.utc)).version)
        finally:
            connection.close()

    first = threading.Thread(target=price_one)
    first.start()
    assert reloading.wait(5)
    # Requests that arrive while the first thread is still loading v2.
    others = [threading.Thread(target=price_one) for _ in range(7)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join()
    assert seen == [v2.version] * 8
