"""POST /api/v1/quote prices without storing."""

from __future__ import annotations

import pytest

from usage.models import UsageEvent


def test_a_quote_has_the_documented_shape(api):
    response = api.post("/api/v1/quote", {"feature": "generation", "model": "sd15", "steps": 30, "width": 512, "height": 512}, format="json")
    assert response.status_code == 200
    assert response.json() == {"unit_price": "0.004000", "quantity": 1, "amount": "0.004000", "currency": "USD", "price_book": 1}
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize(
    "body, unit, amount",
    [
        ({"feature": "generation", "model": "sdxl", "steps": 50, "width": 1024, "height": 1824}, "0.169000", "0.169000"),
        ({"feature": "generation", "model": "sdxl", "steps": 150, "width": 2048, "height": 1024, "quantity": 10,
          "composition_control": True}, "0.768000", "7.680000"),
        ({"feature": "training", "quantity": 2, "event_id": "ignored-but-allowed"}, "5.000000", "10.000000"),
        ({"feature": "magic_prompt", "quantity": 3, "occurred_at": "2026-11-01T00:00:00Z"}, "0.015000", "0.045000"),
    ],
)
def test_quotes(api, body, unit, amount):
    answer = api.post("/api/v1/quote", body, format="json").json()
    assert (answer["unit_price"], answer["amount"]) == (unit, amount)


def test_an_invalid_quote_is_400_with_field_errors(api):
    response = api.post("/api/v1/quote", {"feature": "generation", "model": "sd99", "steps": -1}, format="json")
    assert response.status_code == 400
    errors = response.json()
    assert set(errors) == {"model", "steps", "width", "height"}
    assert errors["steps"] == ["Must be between 1 and 1,000."]


def test_a_quote_body_that_is_not_json_is_400(api):
    response = api.generic("POST", "/api/v1/quote", b"feature=generation", content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]
