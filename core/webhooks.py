"""Webhook endpoints (budgets' and the event stream's): which URLs are allowed, the signature,
and one POST.

A URL must be http(s), and, unless settings.WEBHOOK_ALLOW_PRIVATE is on, every address its host
resolves to must be a public one: not private, loopback, link-local, unspecified, reserved,
shared (CGNAT) or multicast, IPv4-mapped IPv6 included. Otherwise a webhook would be a way for
any workspace admin to make this server send requests into its own network. The check runs when
an endpoint is saved and again before every delivery, and the POST goes to the very address that
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
import io
import ipaddress
import secrets
import socket
import ssl
import threading
import time
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, urlsplit

from django.conf import settings

SECRET_MARK = "whsec_"
SIGNATURE_HEADER = "Meterboard-Signature"
MAX_URL_LENGTH = 2000
_MAX_ANSWER_BYTES = 64 * 1024
# Control characters (C0, DEL, C1), format characters (bidi overrides, zero-width) and every
# kind of space or line break: refused anywhere in a URL.
_REFUSED_CHARACTER_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
_PRINTABLE_ASCII = "".join(chr(code) for code in range(0x21, 0x7F))

# The delivery policy, the same for budget alerts (budgets.delivery) and the event stream
# (notifications.delivery): a failed attempt is retried after 30 s, 1, 2, 4, 8, 16 and 32 minutes,
# then every 45 minutes, until 24 hours after the delivery was created; then it is given up.
RETRY_FIRST_DELAY = timedelta(seconds=30)
RETRY_MAX_DELAY = timedelta(minutes=45)
RETRY_WINDOW = timedelta(hours=24)
MAX_WEBHOOK_TIMEOUT = 60.0
# At most this many webhook attempts of one workspace in flight at once, per kind of webhook
# (setting of that name).
WEBHOOK_CONCURRENCY_PER_WORKSPACE = 2


def retry_delay(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: 30 s doubling, at most RETRY_MAX_DELAY."""
    return min(RETRY_FIRST_DELAY * 2 ** max(attempts - 1, 0), RETRY_MAX_DELAY)


def webhook_timeout() -> float:
    """WEBHOOK_TIMEOUT_SECONDS, the deadline of one attempt, kept within 0.1 to 60 s."""
    seconds = float(getattr(settings, "WEBHOOK_TIMEOUT_SECONDS", 5))
    return min(max(seconds, 0.1), MAX_WEBHOOK_TIMEOUT)


def webhook_concurrency_per_workspace() -> int:
    return max(int(getattr(settings, "WEBHOOK_CONCURRENCY_PER_WORKSPACE", WEBHOOK_CONCURRENCY_PER_WORKSPACE)), 1)


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


# Only plain global unicast addresses are allowed. IPv4: `is_global`, not multicast, and none of
# these special-purpose blocks (some of which Python's `is_global` lets through).
_V4_REFUSED = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    )
)  # fmt: skip
# IPv6: the global unicast block 2000::/3 only, without its special-purpose parts. Every other
# block is refused, among them the IPv4-compatible ::a.b.c.d (::/96), SIIT's ::ffff:0:a.b.c.d,
# the local-use NAT64 prefix 64:ff9b:1::/48, unique-local fc00::/7, link-local fe80::/10,
# site-local fec0::/10 and multicast ff00::/8.
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_REFUSED = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "2001::/23",  # IETF protocol assignments, Teredo 2001::/32 among them (it embeds an IPv4 client)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
    )
)
# Forms that embed an IPv4 address: unwrapped, and the IPv4 address must be allowed itself.
_V6_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # ::ffff:a.b.c.d
_V6_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # NAT64 well-known prefix (DNS64 answers)
_V6_6TO4 = ipaddress.IPv6Network("2002::/16")  # 2002:AABB:CCDD::/48 reaches a.b.c.d


def _v4_refused(address: ipaddress.IPv4Address) -> bool:
    return not address.is_global or address.is_multicast or any(address in net for net in _V4_REFUSED)


def address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Why this address may not receive webhooks ("" when it may): the embedded IPv4 address of
    an IPv6 form that carries one, or the address itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return "a non-public address" if _v4_refused(address) else ""
    if address.scope_id:
        return "a scoped (link-local) non-public address"
    embedded = None
    if address in _V6_MAPPED:
        embedded = address.ipv4_mapped
    elif address in _V6_NAT64:
        embedded = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    elif address in _V6_6TO4:
        embedded = address.sixtofour
    if embedded is not None:
        return f"a form of {embedded}, a non-public address" if _v4_refused(embedded) else ""
    if (
        address not in _V6_GLOBAL_UNICAST
        or any(address in net for net in _V6_REFUSED)
        or not address.is_global
        or address.is_multicast
        or address.is_site_local
    ):
        return "a non-public address"
    return ""


def connect_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The address to connect to: an IPv4-mapped one as the plain IPv4 address it stands for."""
    if isinstance(address, ipaddress.IPv6Address) and address in _V6_MAPPED:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query
    host_header: str
    addresses: tuple[str, ...]  # resolved, and allowed


def _refuse_characters(url: str) -> None:
    for char in url:
        if unicodedata.category(char) in _REFUSED_CHARACTER_CATEGORIES:
            raise UrlRefused(f"Must not contain spaces or control characters (found U+{ord(char):04X}).")


def _parse(url: str) -> tuple[str, str, int, str, str]:
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"Longer than {MAX_URL_LENGTH} characters.")
    url = url.strip(" ")
    _refuse_characters(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"Not a valid URL ({exc}).") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("Must start with https:// (or http://).")
    if not parts.hostname:
        raise UrlRefused("Has no host name.")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("Must not carry a user name or password; authenticate with the signature.")
    if port == 0:
        raise UrlRefused("Port 0 is not a port a receiver can listen on.")
    host = parts.hostname
    if ":" not in host:  # a name (an IPv6 literal stays as it is)
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise UrlRefused(f"The host name {parts.hostname!r} is not a valid name.") from None
    port = port or (443 if parts.scheme == "https" else 80)
    # Non-ASCII in the path or query is sent percent-encoded (UTF-8), as browsers do.
    path = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=_PRINTABLE_ASCII)
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header += f":{parts.port}"
    return parts.scheme, host, port, path, host_header


class _Deadline:
    """A wall-clock (monotonic) deadline: the seconds left, or TimeoutError once it has passed."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline")
        return left


def _getaddrinfo(host: str, port: int, deadline: _Deadline | None) -> list:
    """socket.getaddrinfo, given up at the deadline: a resolver that answers slowly (a name server
    the URL's owner controls) must not hold the worker. The lookup left behind finishes in its
    daemon thread within the resolver's own timeouts."""
    if deadline is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    outcome: list = []
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome.append(("ok", socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
        except BaseException as exc:  # handed to the caller
            outcome.append(("error", exc))
        done.set()

    threading.Thread(target=lookup, name="webhook-dns", daemon=True).start()
    if not done.wait(deadline.remaining()):
        raise TimeoutError("deadline")
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


def url_target(url: str, *, allow_private: bool, timeout: float | None = None) -> Target:
    """Parse and resolve `url`; raise UrlRefused when it may not be used (TimeoutError when the
    name does not resolve within `timeout` seconds)."""
    return _url_target(url, allow_private=allow_private, deadline=None if timeout is None else _Deadline(timeout))


def _url_target(url: str, *, allow_private: bool, deadline: _Deadline | None) -> Target:
    scheme, host, port, path, host_header = _parse(url)
    try:
        infos = _getaddrinfo(host, port, deadline)
    except (socket.gaierror, UnicodeError):
        raise UrlRefused(f"The host {host!r} does not resolve.") from None
    resolved = [ipaddress.ip_address(address) for address in dict.fromkeys(info[4][0] for info in infos)]
    if not resolved:
        raise UrlRefused(f"The host {host!r} does not resolve.")
    if not allow_private:
        for address in resolved:
            refusal = address_refusal(address)
            if refusal:
                raise UrlRefused(
                    f"{host} resolves to {address}, {refusal} (private, loopback, link-local, reserved or "
                    "otherwise not global); webhooks must reach a public host."
                )
    addresses = tuple(dict.fromkeys(connect_address(address) for address in resolved))
    return Target(scheme, host, port, path, host_header, addresses)


class _DeadlineReader(io.RawIOBase):
    """The answer's bytes, each read given only the time left (http.client reads the status and
    header lines through this): a receiver that drips its answer is cut off at the deadline."""

    def __init__(self, sock: socket.socket, deadline: _Deadline):
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._sock.settimeout(self._deadline.remaining())
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """What http.client sees as the socket: sends and reads bounded by the attempt's deadline.
    Closing it leaves the real socket to its owner (post() closes it once the answer is read)."""

    def __init__(self, sock: socket.socket, deadline: _Deadline):
        self._sock, self._deadline = sock, deadline

    def sendall(self, data) -> None:
        self._sock.settimeout(self._deadline.remaining())
        self._sock.sendall(data)  # since Python 3.5 the timeout bounds the whole sendall

    def makefile(self, mode: str = "rb", *args, **kwargs):
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        pass


class _DeadlineConnection(http.client.HTTPConnection):
    """HTTP(S) to an address already checked, every step within one deadline: connecting, the
    TLS handshake (SNI and certificate checked for the host name), sending, and each byte read."""

    def __init__(self, target: Target, address: str, deadline: _Deadline):
        super().__init__(target.host, target.port, timeout=deadline.seconds)
        self.address = address
        self.deadline = deadline
        self.tls = target.scheme == "https"
        self.raw_sock: socket.socket | None = None

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), timeout=self.deadline.remaining())
        self.raw_sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            context = ssl.create_default_context()
            tls = context.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
            self.raw_sock = tls
            tls.settimeout(self.deadline.remaining())  # bounds the whole handshake
            tls.do_handshake()
        self.sock = _DeadlineSocket(self.raw_sock, self.deadline)

    def close_socket(self) -> None:
        self.close()
        raw, self.raw_sock = self.raw_sock, None
        if raw is not None:
            raw.close()


@dataclass(frozen=True)
class PostResult:
    outcome: str  # "ok", "http_error", "timeout", "error", "refused" (DeliveryAttempt.Outcome)
    http_status: int | None = None
    error: str = ""


def post(url: str, secret: str, body: bytes, *, timeout: float, allow_private: bool, headers: dict[str, str]) -> PostResult:
    """POST `body` signed with `secret`. Never raises: the result says what happened.

    `timeout` is one wall-clock deadline for the whole attempt: resolving the name, connecting,
    the TLS handshake, sending, and every byte of the status line and headers received. Once the
    status line and headers are in, the answer is known; the body is read only as far as the
    deadline allows."""
    deadline = _Deadline(timeout)
    timed_out = PostResult("timeout", error=f"No answer within {timeout:g} s.")
    try:
        target = _url_target(url, allow_private=allow_private, deadline=deadline)
    except UrlRefused as exc:
        return PostResult("refused", error=str(exc))
    except TimeoutError:
        return timed_out
    except OSError as exc:
        return PostResult("error", error=f"{type(exc).__name__}: {exc}"[:500])
    connection = _DeadlineConnection(target, target.addresses[0], deadline)
    request_headers = {
        **headers,
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": "Meterboard-Webhooks/1",
        "Connection": "close",
        SIGNATURE_HEADER: signature_header(secret, int(time.time()), body),
    }
    try:
        connection.request("POST", target.path, body=body, headers=request_headers)
        answer = connection.getresponse()
        try:
            answer.read(_MAX_ANSWER_BYTES)
        except (OSError, http.client.HTTPException):
            pass  # the status is known; a slow or broken body does not change it
    except TimeoutError:
        return timed_out
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return PostResult("error", error=f"{type(exc).__name__}: {exc}"[:500])
    finally:
        connection.close_socket()
    if 200 <= answer.status < 300:
        return PostResult("ok", answer.status)
    return PostResult("http_error", answer.status, f"Answered HTTP {answer.status} {answer.reason}"[:500])
