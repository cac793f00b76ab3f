"""Webhook endpoints: which URLs are allowed, the signature, and one POST.

A URL must be http(s), and, unless settings.WEBHOOK_ALLOW_PRIVATE is on, every address its host
resolves to must be a public one: not private, loopback, link-local, unspecified, reserved,
shared (CGNAT) or multicast, IPv4-mapped IPv6 included. Otherwise a budget would be a way for
any workspace admin to make this server send requests into its own network. The check runs when
a budget is saved and again before every delivery, and the POST goes to the very address that
was checked (TLS still verifies the host name), so a DNS answer that changes in between
(DNS rebinding) cannot slip a private address through. Redirects are not followed.

The signature: `Meterboard-Signature: t=<unix seconds>,v1=<hex>` where hex is
HMAC-SHA256(endpoint secret, "<t>.<raw body>"). Receivers recompute it and compare in constant
time, and reject a `t` too far from their clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

SECRET_MARK = "whsec_"
SIGNATURE_HEADER = "Meterboard-Signature"
MAX_URL_LENGTH = 2000
_MAX_ANSWER_BYTES = 64 * 1024


class UrlRefused(ValueError):
    """The URL may not be used (the message says why, for a person)."""


def secret_generate() -> str:
    return SECRET_MARK + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of "<timestamp>.<body>" under the endpoint's secret."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def signature_verify(secret: str, header: str, body: bytes, *, now: float, tolerance: int = 300) -> bool:
    """What a receiver does (also used by the tests): parse, recompute, compare in constant time."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), fields.get("v1", ""))


def _address_refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query
    host_header: str
    addresses: tuple[str, ...]  # resolved, and allowed


def _parse(url: str) -> tuple[str, str, int, str, str]:
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"Longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"Not a valid URL ({exc}).") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("Must start with https:// (or http://).")
    if not parts.hostname:
        raise UrlRefused("Has no host name.")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("Must not carry a user name or password; authenticate with the signature.")
    port = port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header += f":{parts.port}"
    return parts.scheme, host, port, path, host_header


def url_target(url: str, *, allow_private: bool) -> Target:
    """Parse and resolve `url`; raise UrlRefused when it may not be used."""
    scheme, host, port, path, host_header = _parse(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UrlRefused(f"The host {host!r} does not resolve.") from None
    addresses = tuple(dict.fromkeys(info[4][0] for info in infos))
    if not allow_private:
        for text in addresses:
            if _address_refused(ipaddress.ip_address(text.split("%", 1)[0])):
                raise UrlRefused(
                    f"{host} resolves to {text}, a private, loopback, link-local or otherwise "
                    "non-public address; webhooks must reach a public host."
                )
    if not addresses:
        raise UrlRefused(f"The host {host!r} does not resolve.")
    return Target(scheme, host, port, path, host_header, addresses)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address already checked, with SNI and certificate checks for the host name."""

    def __init__(self, host: str, port: int, address: str, *, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass(frozen=True)
class PostResult:
    outcome: str  # "ok", "http_error", "timeout", "error", "refused" (DeliveryAttempt.Outcome)
    http_status: int | None = None
    error: str = ""


def post(url: str, secret: str, body: bytes, *, timeout: float, allow_private: bool, headers: dict[str, str]) -> PostResult:
    """POST `body` signed with `secret`. Never raises: the result says what happened. `timeout`
    bounds connecting and each read."""
    try:
        target = url_target(url, allow_private=allow_private)
    except UrlRefused as exc:
        return PostResult("refused", error=str(exc))
    address = target.addresses[0]
    if target.scheme == "https":
        connection: http.client.HTTPConnection = _PinnedHTTPSConnection(
            target.host, target.port, address, timeout=timeout
        )
    else:
        connection = http.client.HTTPConnection(address, target.port, timeout=timeout)
    request_headers = {
        **headers,
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": "Meterboard-Webhooks/1",
        SIGNATURE_HEADER: signature_header(secret, int(time.time()), body),
    }
    try:
        connection.request("POST", target.path, body=body, headers=request_headers)
        answer = connection.getresponse()
        answer.read(_MAX_ANSWER_BYTES)
    except TimeoutError:
        return PostResult("timeout", error=f"No answer within {timeout:g} s.")
    except (OSError, http.client.HTTPException) as exc:
        return PostResult("error", error=f"{type(exc).__name__}: {exc}"[:500])
    finally:
        connection.close()
    if 200 <= answer.status < 300:
        return PostResult("ok", answer.status)
    return PostResult("http_error", answer.status, f"Answered HTTP {answer.status} {answer.reason}"[:500])
