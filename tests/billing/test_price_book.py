"""Price-book versions: new versions price new events; priced history never changes."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from django.contrib.auth import get_user_model

from billing.models import PriceBook, PriceBookRate
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
    assert client.get("/admin/billing/pricebook/").status_code == 200
    v1_page = client.get(f"/admin/billing/pricebook/{PriceBook.objects.get(version=1).pk}/change/")
    v2_page = client.get(f"/admin/billing/pricebook/{v2.pk}/change/")
    assert v1_page.status_code == v2_page.status_code == 200
    post_events(api, [event(occurred_at="2026-11-10T00:00:00Z")])  # v1 now has priced events
    v1_page = client.get(f"/admin/billing/pricebook/{PriceBook.objects.get(version=1).pk}/change/").content.decode()
    v2_page = client.get(f"/admin/billing/pricebook/{v2.pk}/change/").content.decode()
    assert 'name="composition_multiplier"' not in v1_page  # read-only
    assert 'name="composition_multiplier"' in v2_page
    response = client.post(f"/admin/billing/pricebook/{PriceBook.objects.get(version=1).pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert PriceBook.objects.filter(version=1).exists()
