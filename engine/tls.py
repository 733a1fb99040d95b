"""TLS on the trading port, by config: `[server] tls_cert` and `tls_key` (PEM paths).

Python's ssl under uvloop: each accepted TCP connection first meets a Gate protocol
that decides whether it may have a handshake at all -- a token bucket
(`tls_handshakes_per_s`, `tls_handshake_burst`) and the cap on connections not yet
logged on (`max_pending_logons`, which counts handshakes in progress too). A handshake
costs about 2.5 ms of the engine's own loop (measured here), so without the limit a
burst of connects would stall matching; a connection over the limit is closed before
its handshake starts and costs nothing. Admitted ones are upgraded with
loop.start_tls (handshake timeout = `logon_timeout_s`), then handed to the ordinary
Connection: from there on nothing differs from plain TCP.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time

log = logging.getLogger("trading-engine")


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class TlsState:
    """The listener's context, handshake budget and counters (read by /metrics)."""

    def __init__(self, ctx, rate, burst):
        self.ctx = ctx
        self.rate, self.burst = rate, burst
        self.tokens, self.refilled = burst, time.monotonic()
        self.in_progress = 0
        self.handshakes = 0       # completed
        self.refused = 0          # closed before a handshake (over the rate or the cap)
        self.failed = 0           # handshakes that failed or timed out
        self.last_warning = 0.0

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def gate_factory(server, connection_cls):
    s = server.cfg.server
    state = server.tls = TlsState(server_context(s.tls_cert, s.tls_key), s.tls_handshakes_per_s,
                                  s.tls_handshake_burst)
    return lambda: Gate(server, connection_cls, state)


class Gate(asyncio.Protocol):
    def __init__(self, server, connection_cls, state):
        self.server, self.connection_cls, self.state = server, connection_cls, state

    def connection_made(self, transport):
        srv, st = self.server, self.state
        if srv.stopping or st.in_progress + srv.pending_logons >= srv.cfg.server.max_pending_logons \
                or not st.take():
            st.refused += 1
            now = time.monotonic()
            if now - st.last_warning >= 1.0:
                st.last_warning = now
                log.warning("tls: connection refused before its handshake (rate or cap); %d so far", st.refused)
            transport.abort()
            return
        transport.pause_reading()             # the ClientHello waits in the kernel for start_tls
        st.in_progress += 1
        asyncio.ensure_future(self._upgrade(transport))

    async def _upgrade(self, transport):
        srv, st = self.server, self.state
        conn = self.connection_cls(srv)
        try:
            tls = await srv.loop.start_tls(transport, conn, st.ctx, server_side=True,
                                           ssl_handshake_timeout=srv.cfg.server.logon_timeout_s)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as e:
            st.failed += 1
            log.info("tls: handshake failed: %s", e)
            transport.abort()
            return
        finally:
            st.in_progress -= 1
        st.handshakes += 1
        if tls is None or conn.closed or tls.is_closing():
            if tls is not None:
                tls.abort()
            return
        conn.connection_made(tls)

    def data_received(self, data):            # never: reading is paused until start_tls takes over
        pass

    def connection_lost(self, exc):
        pass
