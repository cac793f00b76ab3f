"""Error reports to Sentry (issue 14, operations): with SENTRY_DSN set, an error in a view reaches
the DSN's server as an envelope, with an API key's secret cut as in the JSON logs (and no personal
data); without it, sentry_sdk is not initialised. The "Sentry" here is a local HTTP server."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "mbk_0123456789ab_S3cr3tPartThatMustNeverLeave"


@pytest.fixture
def sentry_server():
    """Records the body of every POST (envelopes), decompressed."""
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding == "br":
                import brotli

                body = brotli.decompress(body)
            received.append(body)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], received
    server.shutdown()
    server.server_close()


def probe(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tests.config.sentry_probe", SECRET], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test", **env},
    )  # fmt: skip


def test_an_error_in_a_view_reaches_sentry_with_the_secret_cut(sentry_server):
    port, received = sentry_server
    done = probe(SENTRY_DSN=f"http://publickey@127.0.0.1:{port}/1", SENTRY_ENVIRONMENT="staging")
    assert done.returncode == 0, done.stderr
    assert "active True staging" in done.stdout and "status 500" in done.stdout
    envelopes = b"\n".join(received).decode()
    assert '"type":"RuntimeError"' in envelopes.replace(" ", "")
    assert "could not use key mbk_0123456789ab_[secret]" in envelopes
    assert SECRET not in envelopes and "S3cr3tPart" not in envelopes
    assert '"environment":"staging"' in envelopes.replace(" ", "")


def test_without_a_dsn_sentry_is_not_initialised(sentry_server):
    port, received = sentry_server
    done = probe(SENTRY_DSN="")
    assert done.returncode == 0, done.stderr
    assert "active False" in done.stdout and "status 500" in done.stdout
    assert received == []
