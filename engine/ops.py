"""Operations: Prometheus metrics and health probes over HTTP, and systemd notification.

The HTTP listener runs on the engine's own event loop (asyncio streams), not in a
thread: a Python thread would share the GIL with the engine and could stall it for
milliseconds. A scrape reads, at scrape time, integer counters the engine and server
keep anyway (orders, trades, live orders, sequence numbers, sessions) and the ones
the hot path counts in Cython (engine/gateway.pyx Hot: commands by type and outcome,
rejects by reason, fills and traded quantity by symbol, bytes in and out, and fixed
integer-bucket histograms of batch size, receive -> acknowledgement written, and
journal commit time); nothing is a Python object per message.

    GET /metrics          Prometheus text format (prometheus-client), process metrics included
    GET /health/live      200 while the process serves
    GET /health/ready     200 once recovery is done and the journal is writable, else 503
    GET /health/detailed  JSON: sessions, journal, snapshots, symbols, build

Exposure: the listener binds [server] ops_host (loopback by default, never `host`).
Figures about one account (te_account_* series with an `account` label, account names
in /health/detailed) are served only to a request carrying `Authorization: Bearer
<token>` with the token of [server] ops_token_env / ops_token_file; without one
configured they are never served. Everyone else gets the aggregates (te_accounts by
state, counts in /health/detailed).

Logs: one stream (stderr), one JSON object per line, one shape (JsonFormatter): ts, level,
logger, event, msg, and the record's structured fields (account, session, peer, ...), which
call sites pass as `extra={...}` instead of formatting them into msg.

systemd: `notify()` speaks the sd_notify datagram protocol to $NOTIFY_SOCKET (READY=1
after recovery, WATCHDOG=1 from the event loop at half of $WATCHDOG_USEC, STOPPING=1).
"""
from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import os
import platform
import re
import socket
import time

import msgspec
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    InfoMetricFamily, StateSetMetricFamily)

from protocol.codes import AccountState, CommandKind, OrderType, Reject, SymbolState
from protocol.wire import SCHEMA_VERSION

ORDER_ENTRY = (CommandKind.NEW_ORDER, CommandKind.CANCEL, CommandKind.AMEND, CommandKind.MASS_CANCEL)
# reasons te_rejects_total shows from the start, at 0 (alerts take increase() over them; the
# others appear when first counted)
ALWAYS_REJECTS = frozenset({Reject.SLOW_CONSUMER, Reject.JOURNAL_UNAVAILABLE, Reject.THROTTLED})


# attributes every LogRecord has: anything else on a record came from `extra={...}`
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@functools.lru_cache(maxsize=1024)
def _event_name(template: str) -> str:
    """A record's event when the call site names none: its message template up to the first
    ':', '%' or '(' in snake case ("journal still unavailable: %s" -> journal_still_unavailable)."""
    return re.sub(r"[^a-z0-9]+", "_", re.split(r"[:%(]", template, maxsplit=1)[0].lower()).strip("_")[:48] or "log"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, event (the call site's `extra` event, else
    derived from the message template), msg, the structured fields passed in `extra`, and exc."""
    encoder = msgspec.json.Encoder(enc_hook=str)

    def format(self, record):
        out = {"ts": round(record.created, 6), "level": record.levelname, "logger": record.name,
               "event": getattr(record, "event", None) or _event_name(str(record.msg)), "msg": record.getMessage()}
        for k, v in record.__dict__.items():
            if k not in _RECORD_ATTRS and k != "event":
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return self.encoder.encode(out).decode()


def notify(message: str) -> bool:
    """Send one sd_notify message; False when not run under systemd (no NOTIFY_SOCKET)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]                 # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(path)
        s.sendall(message.encode())
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None if no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


def ready(srv) -> bool:
    return srv.ready and srv.journal_ok and not srv.stopping


class EngineCollector:
    """Reads the server's counters at scrape time; per-account series only with
    `accounts` (an authorized scrape)."""

    def __init__(self, server):
        self.server = server

    def collect(self, accounts: bool = False):
        srv = self.server
        e = srv.engine
        from engine.server import VERSION           # (engine.server imports this module)
        yield InfoMetricFamily("te_build", "the running build", value={
            "version": VERSION, "schema_version": str(SCHEMA_VERSION), "python": platform.python_version()})
        yield CounterMetricFamily("te_orders_accepted", "orders accepted by the core", value=e.next_order_id - 1)
        yield CounterMetricFamily("te_trades", "trades executed", value=e.next_trade_id - 1)
        yield CounterMetricFamily("te_commands", "commands applied by the core, the batch being committed included "
                                  "(te_journal_last_seq: committed)", value=srv.next_cmd_seq - 1)
        yield CounterMetricFamily("te_batches", "processing batches (journal group commits)", value=srv.batches)
        hot = srv.hot
        yield CounterMetricFamily("te_bytes_in", "bytes received from clients", value=hot.bytes_in)
        yield CounterMetricFamily("te_bytes_out", "bytes written to clients", value=hot.bytes_out)
        yield from self.hot_metrics(hot)
        yield GaugeMetricFamily("te_open_orders", "orders resting or untriggered", value=e.live_orders)
        yield GaugeMetricFamily("te_sessions", "logged-on sessions",
                                value=sum(1 for c in srv.conns if c.account is not None))
        yield GaugeMetricFamily("te_pending_logons", "connections not yet logged on", value=srv.pending_logons)
        yield GaugeMetricFamily("te_ready", "1 once recovery is done, while the journal is writable and the server "
                                "is not stopping (/health/ready)", value=int(ready(srv)))
        yield GaugeMetricFamily("te_journal_writable", "1 while the journal accepts writes", value=int(srv.journal_ok))
        yield GaugeMetricFamily("te_journal_last_seq", "last journaled command sequence",
                                value=srv.journal.last_seq if srv.journal else 0)
        yield GaugeMetricFamily("te_snapshot_seq", "sequence of the last snapshot", value=srv.last_snapshot_seq)
        yield CounterMetricFamily("te_snapshots_skipped", "snapshots not written: too little free disk "
                                  "(journal.snapshot_min_free_bytes)", value=srv.snapshots_skipped)
        yield CounterMetricFamily("te_snapshots_failed", "snapshots whose writing failed", value=srv.snapshots_failed)
        if srv.last_snapshot_time is not None:
            yield GaugeMetricFamily("te_snapshot_age_seconds", "age of the newest snapshot written or loaded",
                                    value=time.time() - srv.last_snapshot_time)
        if srv.journal is not None:
            info, st = srv.journal.env.info(), srv.journal.env.stat()
            yield GaugeMetricFamily("te_journal_bytes", "bytes of journal pages in use",
                                    value=(info["last_pgno"] + 1) * st["psize"])
        f = srv.feeds
        yield GaugeMetricFamily("te_md_subscriptions", "market-data subscriptions (connection x symbol)",
                                value=sum(len(x.items) for x in f.subs.values()))
        yield GaugeMetricFamily("te_md_behind", "subscribed connections above their market-data high-water mark",
                                value=f.paused)
        yield CounterMetricFamily("te_md_frames", "market-data frames written", value=f.frames_sent)
        yield CounterMetricFamily("te_md_conflated", "market-data updates conflated for connections behind",
                                  value=f.conflated)
        if srv.tls is not None:
            yield CounterMetricFamily("te_tls_handshakes", "TLS handshakes completed", value=srv.tls.handshakes)
            yield CounterMetricFamily("te_tls_refused", "connections closed before a TLS handshake (rate or cap)",
                                      value=srv.tls.refused)
            yield CounterMetricFamily("te_tls_failed", "TLS handshakes failed or timed out", value=srv.tls.failed)
        if srv.repl is not None:              # replication (engine/SCALING.md)
            r = srv.repl
            yield GaugeMetricFamily("te_replication_leader", "1 while this node serves as the primary (holds the "
                                    "leader lease, not fenced)", value=int(srv.role == "primary" and r.fenced is None))
            yield GaugeMetricFamily("te_replication_fenced", "1 once this node lost its leader lease: it acknowledges "
                                    "nothing more (restart it as a standby)", value=int(srv.role == "fenced"))
            yield CounterMetricFamily("te_replication_published", "journal records published to the stream",
                                      value=r.published)
            yield CounterMetricFamily("te_replication_applied", "journal records applied from the stream (standby, "
                                      "read replica)", value=r.applied)
            yield GaugeMetricFamily("te_replication_lag", "stream messages not yet applied, as last seen (standby, "
                                    "read replica)", value=r.lag)
        halted = GaugeMetricFamily("te_symbol_halted", "1 if the symbol is halted", labels=["symbol"])
        for s in srv.cfg.symbols:
            halted.add_metric([s.name], int(e.symbol_state(s.id) == SymbolState.HALTED))
        yield halted
        yield from srv.auth.metrics()
        if e.risk is not None:
            yield from risk_metrics(srv, accounts)
        if e.algos is not None:                   # execution algorithms (engine/ALGOS.md)
            g = e.algos
            yield GaugeMetricFamily("te_algo_parents_active", "live parent orders", value=g.active)
            yield CounterMetricFamily("te_algo_children", "child orders the parents sent (engine state: since the "
                                      "journal began)", value=g.children_spawned)
            buckets = [("+Inf" if le is None else repr(le), n) for le, n in g.slippage_buckets()]
            yield HistogramMetricFamily("te_algo_slippage_bps", "slippage against the arrival price of the parents "
                                        "that ended with fills, bp (positive = worse)", buckets=buckets,
                                        sum_value=g.slip_sum_cbps / 100)

    def hot_metrics(self, hot):
        """What the hot path counts (gateway.Hot)."""
        srv = self.server
        orders = CounterMetricFamily("te_orders", "order-entry commands applied by the engine (new orders by order "
                                     "type, cancel, amend, mass_cancel), by outcome (rejected: the engine's REJECTED)",
                                     labels=["type", "outcome"])
        control = CounterMetricFamily("te_control_commands", "commands from operators and the server's timers "
                                      "(halt, deposit, set_limit, expire, risk_tick, ...), by outcome",
                                      labels=["command", "outcome"])
        counts = hot.commands_arr
        for kind in CommandKind:
            if kind >= counts.shape[0]:
                continue                  # counted under slot 0 (gateway.N_KINDS)
            types = [(t.name.lower(), int(t)) for t in OrderType] if kind == CommandKind.NEW_ORDER else \
                [(kind.name.lower(), 0)]
            family = orders if kind in ORDER_ENTRY else control
            for name, ot in types:
                family.add_metric([name, "accepted"], int(counts[kind, ot, 0]))
                family.add_metric([name, "rejected"], int(counts[kind, ot, 1]))
        yield orders
        yield control
        rejects = CounterMetricFamily("te_rejects", "rejects by reason (engine and session level; SLOW_CONSUMER: "
                                      "sessions cut off for not reading)", labels=["reason"])
        for code in sorted(set(hot.rejects_arr.nonzero()[0].tolist()) | ALWAYS_REJECTS):
            try:
                name = Reject(code).name
            except ValueError:
                name = str(code)
            rejects.add_metric([name], int(hot.rejects_arr[code]))
        yield rejects
        fills = CounterMetricFamily("te_fills", "trades by symbol", labels=["symbol"])
        volume = CounterMetricFamily("te_traded_qty", "traded quantity by symbol, in the symbol's own unit (the "
                                     "engine's integer units / 10^qty_decimals)", labels=["symbol"])
        for s in srv.cfg.symbols:
            fills.add_metric([s.name], int(hot.fills_arr[s.id]))
            volume.add_metric([s.name], int(hot.volume_arr[s.id]) / 10 ** s.qty_decimals)
        yield fills
        yield volume
        yield _histogram("te_batch_commands", "commands per batch (one journal commit each)", hot.batch, 1)
        yield _histogram("te_ack_latency_seconds", "per command: receive to acknowledgement written", hot.latency, 1e9)
        yield _histogram("te_journal_commit_seconds", "journal commit (fsync with sync durability)", hot.commit, 1e9)


def risk_metrics(srv, per_account: bool):
    """Risk gauges at scrape time from the risk arrays (engine/RISK.md): accounts by state, breakers,
    kill switches and reject-rate lockouts; with `per_account` also each account's exposure, margins,
    equity (quote currency), state, kill switch and lockout. O(accounts) numpy reads per scrape,
    nothing counted per order; the figures as a PORTFOLIO query computes them, so a scrape changes
    no state (engine/RISK.md "Queries")."""
    r = srv.engine.risk
    scale = 10.0 ** -r.cash_decimals
    cols = r.acct_cols
    accounts = sorted((a.name, a.id) for a in srv.accounts.values())    # the config's and those added at run time
    now = time.time_ns()
    by_state = GaugeMetricFamily("te_accounts", "accounts by risk state", labels=["state"])
    states = [int(cols["state"][i]) for _, i in accounts]
    for st in AccountState:
        by_state.add_metric([st.name.lower()], states.count(int(st)))
    yield by_state
    yield GaugeMetricFamily("te_accounts_kill_switch", "accounts whose own kill switch is on",
                            value=sum(int(cols["kill"][i]) != 0 for _, i in accounts))
    yield GaugeMetricFamily("te_accounts_reject_lockout", "accounts locked out for their reject rate",
                            value=sum(int(cols["lock_until"][i]) > now for _, i in accounts))
    yield GaugeMetricFamily("te_kill_switch_global", "1 while the global kill switch is on", value=int(r.kill_all))
    yield GaugeMetricFamily("te_error_breaker_tripped", "1 while the engine-wide error-rate breaker is tripped",
                            value=int(r.breaker))
    brk = GaugeMetricFamily("te_symbol_breaker_tripped", "1 while the symbol is halted by its price-band breaker",
                            labels=["symbol"])
    for s in srv.cfg.symbols:
        brk.add_metric([s.name], int(r.breaker_state(s.id)[0]))
    yield brk
    if not per_account:
        return
    pf = {i: r.portfolio(i) for _, i in accounts}
    for name, key, text in (("te_account_equity", "equity", "cash + unrealized P&L, quote currency"),
                            ("te_account_cash", "cash", "cash, quote currency"),
                            ("te_account_exposure", "exposure", "gross exposure at the marks, quote currency"),
                            ("te_account_initial_margin", "initial_margin",
                             "initial margin of the worst case with open orders"),
                            ("te_account_maintenance_margin", "maintenance_margin",
                             "maintenance margin of the positions")):
        g = GaugeMetricFamily(name, text, labels=["account"])
        for acct, i in accounts:
            g.add_metric([acct], int(pf[i][key]) * scale)
        yield g
    state = StateSetMetricFamily("te_account_state", "the account's risk state (engine/RISK.md)",
                                 labels=["account"])
    kill = GaugeMetricFamily("te_account_kill_switch", "1 while the account's kill switch is on", labels=["account"])
    locked = GaugeMetricFamily("te_account_reject_lockout", "1 while the account is locked out for its reject rate",
                               labels=["account"])
    for acct, i in accounts:
        current = int(cols["state"][i])
        state.add_metric([acct], {st.name.lower(): current == st for st in AccountState})
        kill.add_metric([acct], int(cols["kill"][i]))
        locked.add_metric([acct], int(int(cols["lock_until"][i]) > now))
    yield state
    yield kill
    yield locked


def _histogram(name, doc, h, scale):
    """A gateway.Histogram (integer buckets) as a Prometheus histogram; bounds and sum
    divided by `scale` (ns -> seconds)."""
    buckets = [("+Inf" if le is None else repr(le / scale), count) for le, count in h.buckets()]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.sum / scale)


class _One:
    """One metric family, in the shape generate_latest() takes."""

    def __init__(self, family):
        self.family = family

    def collect(self):
        return [self.family]


# /health/detailed "risk" keys that name accounts: a count instead without the token
ACCOUNT_LISTS = ("killed_accounts", "liquidating_accounts", "suspended_or_reduce_only", "reject_rate_locked_accounts")


class Ops:
    def __init__(self, server, host: str, port: int, token: bytes | None = None):
        self.server, self.host, self.port, self.token = server, host, port, token
        self.process = ProcessCollector(registry=None)
        self.engine = EngineCollector(server)
        self.registry = CollectorRegistry()
        for c in (self.process, self.engine):
            self.registry.register(c)
        self.http = None
        self.started = time.time()

    def authorized(self, headers: dict) -> bool:
        """True for a request bearing the configured token (constant-time compare)."""
        given = headers.get(b"authorization", b"")
        return self.token is not None and given.startswith(b"Bearer ") and \
            hmac.compare_digest(given[7:].strip(), self.token)

    async def metrics(self, accounts: bool = False) -> bytes:
        """The /metrics text, built one metric family per loop iteration: formatting costs
        about 2 us per sample line here, so a whole scrape at once would hold the engine's
        loop for about half a millisecond; in steps, no step holds it for more than tens
        of microseconds and reads are served in between. Per-account series only with
        `accounts` (an authorized request)."""
        parts = []
        for family in (*self.process.collect(), *self.engine.collect(accounts)):
            parts.append(generate_latest(_One(family)))
            await asyncio.sleep(0)
        return b"".join(parts)

    async def start(self):
        self.http = await asyncio.start_server(self.handle, self.host, self.port)
        return self.http.sockets[0].getsockname()[1]

    def close(self):
        if self.http is not None:
            self.http.close()

    def ready(self) -> bool:
        return ready(self.server)

    def detailed(self, accounts: bool = False) -> dict:
        """The server's status; without `accounts`, lists of account names become counts."""
        out = dict(self.server.status(), ready=self.ready(), uptime_s=round(time.time() - self.started, 3))
        risk = out.get("risk")
        if not accounts and isinstance(risk, dict):
            out["risk"] = {k: len(v) if k in ACCOUNT_LISTS else v for k, v in risk.items()}
        return out

    async def handle(self, reader, writer):
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            headers = {}
            for _ in range(100):
                h = await asyncio.wait_for(reader.readline(), 5)
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.partition(b":")
                headers[name.strip().lower()] = value.strip()
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if path == "/metrics":
                status, ctype, body = 200, "text/plain; version=0.0.4", await self.metrics(self.authorized(headers))
            elif path == "/health/live":
                status, ctype, body = 200, "application/json", b'{"live":true}'
            elif path == "/health/ready":
                ok = self.ready()
                status, ctype, body = (200 if ok else 503), "application/json", msgspec.json.encode({"ready": ok})
            elif path == "/health/detailed":
                status, ctype, body = 200, "application/json", msgspec.json.encode(
                    self.detailed(self.authorized(headers)))
            else:
                status, ctype, body = 404, "text/plain", b"not found\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
