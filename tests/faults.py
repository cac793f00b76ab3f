"""Faults on the wire, for tests: a TCP proxy in front of a real server, run by the test itself.

`TcpProxy(upstream_port)` listens on a free port of 127.0.0.1 and relays bytes both ways. Its faults
are real to the client: `refuse()` closes the listening socket, so the kernel refuses every new
connection (and open ones are dropped); `lose_answers()` relays each request to the server, lets
the server answer, then drops the connection instead of relaying the answer (the request was
acted on, the client never learns how); `latency` delays every request; `forward()` serves again
on the same port. Nothing here touches the machine's shared services.
"""

from __future__ import annotations

import select
import socket
import threading
import time


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.mode = "forward"
        self.latency = 0.0  # seconds before each request is relayed
        self.requests = 0  # requests relayed to the server
        self.lost = 0  # answers dropped in lose_answers mode
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- faults ----------------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def forward(self) -> None:
        """Serve normally again (on the same port)."""
        self._drop_connections()
        self.mode = "forward"
        if self._listener is None:
            self._listen()

    def refuse(self) -> None:
        """Stop listening: connections are refused by the kernel, open ones are cut."""
        self.mode = "refuse"
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        self._drop_connections()

    def lose_answers(self) -> None:
        """Relay requests, drop the answers."""
        self._drop_connections()
        self.mode = "lose"
        if self._listener is None:
            self._listen()

    def stop(self) -> None:
        self.refuse()

    # --- plumbing --------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by refuse()
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections.update((client, server))
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()

    def _drop_connections(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, set()
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _pipe(self, client: socket.socket, server: socket.socket) -> None:
        sockets = [client, server]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if self.latency:
                            time.sleep(self.latency)
                        self.requests += 1
                        server.sendall(data)
                    elif self.mode == "lose":
                        self._drain(server)  # the server's whole answer, then the cut
                        self.lost += 1
                        return
                    else:
                        client.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in sockets:
                with self._lock:
                    self._connections.discard(sock)
                try:
                    sock.close()
                except OSError:
                    pass

    @staticmethod
    def _drain(sock: socket.socket, quiet: float = 0.3) -> None:
        while select.select([sock], [], [], quiet)[0]:
            if not sock.recv(65536):
                return
