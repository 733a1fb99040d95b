"""TLS on the trading port, by config: `[server] tls_cert` and `tls_key` (PEM paths).

Python's ssl under uvloop. The listener accepts connections itself (a non-blocking
listening socket read by the event loop) so that it can decide, before any TLS work,
whether a connection may have a handshake at all: a token bucket
(`tls_handshakes_per_s`, `tls_handshake_burst`) and the cap on connections not yet
logged on (`max_pending_logons`, counting handshakes in progress; at most
`max_pending_logons_per_address` from one source address, and when all are taken the
address with most handshakes in progress loses its oldest to an address with fewer, as
Server.admit does for plain connections). A handshake costs
about 2.5 ms of the engine's own loop (measured here), so without the limit a burst of
connects would stall matching; a connection over the limit is closed before its
handshake starts and costs only accept() and close(). Admitted sockets go, untouched,
to loop.connect_accepted_socket(ssl=...) (handshake timeout = `logon_timeout_s`), which
calls the ordinary Connection's connection_made once the handshake is done: from there
on nothing differs from plain TCP.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time

log = logging.getLogger("trading-engine")

ACCEPTS_PER_WAKEUP = 64


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class Listener:
    """The TLS trading listener; `sockets` and `close()` as an asyncio Server has them.
    Its counters are read by /metrics."""

    def __init__(self, server, connection_cls, host: str, port: int):
        s = server.cfg.server
        self.server, self.connection_cls = server, connection_cls
        self.ctx = server_context(s.tls_cert, s.tls_key)
        self.rate, self.burst = s.tls_handshakes_per_s, s.tls_handshake_burst
        self.tokens, self.refilled = self.burst, time.monotonic()
        self.in_progress = 0
        self.by_address: dict[str, dict] = {}   # peer address -> its handshake tasks, oldest first
        self.handshakes = 0       # completed
        self.refused = 0          # closed before a handshake (over the rate or the cap)
        self.failed = 0           # handshakes that failed or timed out
        self.last_warning = 0.0
        self.sock = socket.create_server((host, port), backlog=1024)
        self.sock.setblocking(False)
        self.sockets = [self.sock]
        self.loop = server.loop
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def _accept(self):
        srv = self.server
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:             # EMFILE and the like: the next wakeup tries again
                log.error("tls: accept failed: %s", e, extra={"event": "tls_accept_failed"})
                return
            if srv.stopping or not self.admit(peer[0]) or not self.take():
                self.refused += 1
                conn.close()
                now = time.monotonic()
                if now - self.last_warning >= 1.0:
                    self.last_warning = now
                    log.warning("tls: connection refused before its handshake (rate or cap); %d so far", self.refused)
                continue
            conn.setblocking(False)
            self.in_progress += 1
            task = asyncio.ensure_future(self._handshake(conn, peer[0]))
            self.by_address.setdefault(peer[0], {})[task] = None

    def admit(self, address) -> bool:
        """Room for a handshake from `address` (see the module docstring)."""
        s = self.server.cfg.server
        mine = self.by_address.get(address)
        n = len(mine) if mine else 0
        if n >= s.max_pending_logons_per_address:
            return False
        if self.in_progress + self.server.pending_logons >= s.max_pending_logons:
            most = max(self.by_address.values(), key=len, default=())
            if len(most) <= n + 1:
                return False
            next(iter(most)).cancel()        # its socket is closed; the slot frees as it unwinds
        return True

    async def _handshake(self, conn, address):
        srv = self.server
        try:
            await self.loop.connect_accepted_socket(lambda: self.connection_cls(srv), conn, ssl=self.ctx,
                                                    ssl_handshake_timeout=srv.logon_timeout())
            self.handshakes += 1
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError, asyncio.CancelledError) as e:
            self.failed += 1                 # the transport closed the socket
            log.info("tls: handshake failed: %s", e or type(e).__name__,
                     extra={"event": "tls_handshake_failed", "peer": address, "error": str(e) or type(e).__name__})
        finally:
            self.in_progress -= 1
            mine = self.by_address.get(address)
            if mine is not None:
                mine.pop(asyncio.current_task(), None)
                if not mine:
                    del self.by_address[address]

    def close(self):
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
