"""Webhook egress (issue 9, finding 3): only plain global unicast addresses, every IPv6 form that
embeds an IPv4 address unwrapped or refused, no port 0, no control characters; checked when a
budget is saved and again before every delivery (DNS answers included)."""

from __future__ import annotations

import ipaddress
import socket
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from budgets import webhooks
from budgets.delivery import delivery_attempt
from budgets.evaluation import workspace_evaluate
from budgets.models import AlertDelivery
from budgets.services import budget_create
from tests.budgets.conftest import spend_events
from tests.budgets.test_budgets_api import CREATE
from usage.services import events_ingest

NOW = datetime(2026, 11, 21, 12, tzinfo=timezone.utc)

# Each embeds (or is) a private, loopback, link-local or otherwise non-global address.
EMBEDDED_PRIVATE = [
    pytest.param("http://[64:ff9b::a9fe:a9fe]/", id="nat64-metadata"),  # 169.254.169.254
    pytest.param("http://[64:ff9b::7f00:1]/", id="nat64-loopback"),  # 127.0.0.1
    pytest.param("http://[64:ff9b::a00:1]/", id="nat64-private"),  # 10.0.0.1
    pytest.param("http://[64:ff9b:1::a9fe:a9fe]/", id="nat64-local-use"),  # 64:ff9b:1::/48 (RFC 8215)
    pytest.param("http://[64:ff9b:1:5db8:d7:e00::]/", id="nat64-local-use-public"),  # refused whatever it embeds
    pytest.param("http://[2002:7f00:1::]/", id="6to4-loopback"),  # 127.0.0.1
    pytest.param("http://[2002:a9fe:a9fe::1]/", id="6to4-metadata"),
    pytest.param("http://[2002:c0a8:1::1]/", id="6to4-private"),  # 192.168.0.1
    pytest.param("http://[::127.0.0.1]/", id="ipv4-compatible-loopback"),
    pytest.param("http://[::a9fe:a9fe]/", id="ipv4-compatible-metadata"),
    pytest.param("http://[::5db8:d70e]/", id="ipv4-compatible-public"),  # deprecated form: refused
    pytest.param("http://[::ffff:10.0.0.1]/", id="ipv4-mapped-private"),
    pytest.param("http://[::ffff:169.254.169.254]/", id="ipv4-mapped-metadata"),
    pytest.param("http://[::ffff:0:7f00:1]/", id="ipv4-translated-loopback"),  # SIIT ::ffff:0:0:0/96
    pytest.param("http://[2001:0:5db8:d70e::80ff:fffe]/", id="teredo-loopback-client"),  # client 127.0.0.1
    pytest.param("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", id="teredo"),  # 2001::/32: refused
    pytest.param("http://[fec0::1]/", id="site-local"),
    pytest.param("http://[3fff::1]/", id="documentation-3fff"),
    pytest.param("http://[2001:db8::1]/", id="documentation-2001-db8"),
    pytest.param("http://[5f00::1]/", id="srv6-outside-global-unicast"),
    pytest.param("http://[100::1]/", id="discard-only"),
    pytest.param("http://192.0.0.9/", id="ipv4-protocol-assignments"),
    pytest.param("http://192.88.99.1/", id="ipv4-6to4-relay-anycast"),
    pytest.param("http://0x7f.1/", id="ipv4-hex-shorthand"),
    pytest.param("http://2130706433/", id="ipv4-decimal"),
]


@pytest.mark.parametrize("url", EMBEDDED_PRIVATE)
def test_ipv6_forms_embedding_private_ipv4_and_other_non_global_addresses_are_refused(api, url):
    response = api.post("/api/v1/budgets", {**CREATE, "webhooks": [{"url": url}]}, format="json")
    assert response.status_code == 400, (url, response.content)
    [message] = response.json()["webhooks"][0]["url"]
    assert "non-public address" in message


@pytest.mark.parametrize(
    "text, connect_to",
    [
        ("93.184.215.14", "93.184.215.14"),
        ("2606:4700::1111", "2606:4700::1111"),  # plain global unicast
        ("64:ff9b::5db8:d70e", "64:ff9b::5db8:d70e"),  # NAT64 of a public address (DNS64 answers)
        ("2002:5db8:d70e::1", "2002:5db8:d70e::1"),  # 6to4 of a public address
        ("::ffff:93.184.215.14", "93.184.215.14"),  # IPv4-mapped: unwrapped, connected to as IPv4
    ],
)
def test_embeddings_of_public_addresses_are_unwrapped_and_allowed(text, connect_to):
    address = ipaddress.ip_address(text)
    assert webhooks.address_refusal(address) == ""
    assert webhooks.connect_address(address) == connect_to


def test_the_message_names_the_embedded_address():
    message = webhooks.address_refusal(ipaddress.ip_address("64:ff9b::a9fe:a9fe"))
    assert message == "a form of 169.254.169.254, a non-public address"


def test_port_0_is_refused(api):
    response = api.post("/api/v1/budgets", {**CREATE, "webhooks": [{"url": "https://93.184.215.14:0/hook"}]}, format="json")
    assert response.status_code == 400
    assert response.json() == {"webhooks": [{"url": ["Port 0 is not a port a receiver can listen on."]}]}


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://93.184.215.14/a\x00b", id="nul"),
        pytest.param("https://93.184.215.14/a\tb", id="tab"),  # urlsplit drops it silently
        pytest.param("https://93.184.215.14/x\r\nX-Injected: 1", id="crlf"),
        pytest.param("https://93.184.215.14/a\nb", id="lf"),
        pytest.param("https://93.184.215.14/a\x7fb", id="del"),
        pytest.param("https://93.184.215.14/a\x85b", id="c1-next-line"),
        pytest.param("https://93.184.215.14/a\u2028b", id="line-separator"),
        pytest.param("https://93.184.215.14/a\u202eb", id="bidi-override"),
        pytest.param("https://93.184.215.14/a\u200bb", id="zero-width-space"),
        pytest.param("https://93.184.215.14/a b", id="space"),
        pytest.param("https://93.184.\t215.14/", id="tab-in-host"),
    ],
)
def test_urls_with_control_characters_or_spaces_are_refused(api, url):
    response = api.post("/api/v1/budgets", {**CREATE, "webhooks": [{"url": url}]}, format="json")
    assert response.status_code == 400, url
    [message] = response.json()["webhooks"][0]["url"]
    # (DRF's CharField refuses NUL itself, with its own message.)
    assert message.startswith("Must not contain spaces or control characters") or message == (
        "Null characters are not allowed."
    ), message
    with pytest.raises(webhooks.UrlRefused, match="^Must not contain spaces or control characters"):
        webhooks.url_target(url, allow_private=True)  # as at delivery, for a URL stored before


def test_a_non_ascii_path_is_sent_percent_encoded(receiver):
    """Not refused, and not a crash of the delivery (http.client only sends ASCII)."""
    result = webhooks.post(receiver.url("/hook/é?q=ü"), "whsec_x", b"{}", timeout=5, allow_private=True, headers={})
    assert result.outcome == "ok"
    assert [r.path for r in receiver.received] == ["/hook/%C3%A9?q=%C3%BC"]


def _answers(*texts: str):
    """A getaddrinfo that answers these addresses, whatever the name."""

    def getaddrinfo(host, port, *args, **kwargs):
        return [
            (socket.AF_INET6 if ":" in text else socket.AF_INET, socket.SOCK_STREAM, 6, "", (text, port))
            for text in texts
        ]

    return getaddrinfo


@pytest.mark.parametrize("answer", ["64:ff9b::7f00:1", "2002:7f00:1::1", "::127.0.0.1", "::ffff:127.0.0.1", "fec0::1"])
def test_a_dns_answer_embedding_a_private_address_is_refused_when_saved(api, monkeypatch, answer):
    monkeypatch.setattr(webhooks.socket, "getaddrinfo", _answers("93.184.215.14", answer))
    response = api.post("/api/v1/budgets", {**CREATE, "webhooks": [{"url": "https://hooks.example.com/x"}]}, format="json")
    assert response.status_code == 400
    [message] = response.json()["webhooks"][0]["url"]
    assert message.startswith(f"hooks.example.com resolves to {ipaddress.ip_address(answer)}, ")


@pytest.mark.parametrize("answer", ["64:ff9b::7f00:1", "2002:7f00:1::1", "::127.0.0.1", "::ffff:0:7f00:1"])
def test_a_dns_answer_that_turned_into_an_embedded_private_address_is_refused_at_delivery(
    workspace, api_key, monkeypatch, answer
):
    monkeypatch.setattr(webhooks.socket, "getaddrinfo", _answers("93.184.215.14"))
    budget, _ = budget_create(workspace=workspace, amount=Decimal(10), thresholds=[100], forecast_alerts=False,
                              email=False, webhook_urls=["https://hooks.example.com/x"])  # fmt: skip
    events_ingest(workspace=workspace, api_key=api_key, raw_events=spend_events(10, occurred_at="2026-11-21T08:00:00Z"), now=NOW)
    workspace_evaluate(workspace.pk, now=NOW)
    delivery = AlertDelivery.objects.get(channel="webhook")
    sent = []
    monkeypatch.setattr(webhooks.socket, "getaddrinfo", _answers(answer))
    monkeypatch.setattr(webhooks.socket, "create_connection", lambda *a, **k: sent.append(a) or 1 / 0)
    assert delivery_attempt(delivery.pk, now=NOW).status == "retrying"
    assert sent == []  # no connection was even opened
    [attempt] = delivery.attempt_log.all()
    assert attempt.outcome == "refused" and "non-public address" in attempt.error
