"""Venue monitoring: per-venue child acknowledgement latency, fill ratio, rejects and
availability as Prometheus metrics (prometheus-client), the live score that orders venues
among equal all-in prices, and demotion of a degraded venue.

    score = availability x fill ratio x (1 - reject ratio) / (1 + p99 ack latency in ms / 10)

over the last WINDOW children (a venue with no history yet scores 1). A venue is degraded when
its p99 acknowledgement latency exceeds [router] degraded_p99_ms or its reject ratio exceeds
degraded_reject_ratio (once it has degraded_min_samples acknowledgements): it is ranked after
every healthy venue (it still gets an order when its price is the best: the price comes first),
a remainder is posted there only when no healthy venue trades the symbol, and
te_route_venue_degraded{venue} is 1 (the alert).
"""
from __future__ import annotations

import logging
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.routing.codec import R
from protocol.codes import CommandKind, TimeInForce
from protocol.wire import MsgType

log = logging.getLogger("trading-engine.route")

WINDOW = 256
LATENCY_BUCKETS = (50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3, 250e-3, 1.0)


class VenueStats:
    __slots__ = ("acks", "outcomes", "up_since", "up_s", "down_since", "down_s", "sent_qty", "filled_qty",
                 "children", "rejects", "sorted_acks")

    def __init__(self) -> None:
        self.acks: deque[float] = deque(maxlen=WINDOW)          # seconds, child written -> first report
        self.sorted_acks: list[float] | None = None             # acks sorted, until the next ack (pct)
        self.outcomes: deque[int] = deque(maxlen=WINDOW)        # 1 rejected, 0 not
        self.up_since: float | None = None
        self.down_since: float | None = time.monotonic()
        self.up_s = self.down_s = 0.0
        self.sent_qty = self.filled_qty = self.children = self.rejects = 0

    def availability(self) -> float:
        now = time.monotonic()
        up = self.up_s + (now - self.up_since if self.up_since is not None else 0.0)
        down = self.down_s + (now - self.down_since if self.down_since is not None else 0.0)
        return up / (up + down) if up + down > 0 else 0.0

    def pct(self, q: float) -> float:
        if not self.acks:
            return 0.0
        if self.sorted_acks is None:      # sorted once per ack, not at every rerank of every venue
            self.sorted_acks = sorted(self.acks)
        xs = self.sorted_acks
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def fill_ratio(self) -> float:
        return self.filled_qty / self.sent_qty if self.sent_qty else 1.0

    def reject_ratio(self) -> float:
        return sum(self.outcomes) / len(self.outcomes) if self.outcomes else 0.0


class Monitor:
    def __init__(self, router, names: list[str], degraded_p99_ms: float, degraded_reject_ratio: float,
                 min_samples: int = 10):
        self.router = router
        self.names = names                                       # index - 1 -> venue name
        self.p99_ms, self.reject_max, self.min_samples = degraded_p99_ms, degraded_reject_ratio, min_samples
        self.stats = {i: VenueStats() for i in range(1, len(names) + 1)}
        self.registry = CollectorRegistry()
        r = self.registry
        self.m_up = Gauge("te_route_venue_up", "1 while the router's session with the venue is logged on", ["venue"],
                          registry=r)
        self.m_degraded = Gauge("te_route_venue_degraded", "1 while the venue is degraded and demoted (alert)",
                                ["venue"], registry=r)
        self.m_avail = Gauge("te_route_venue_availability", "fraction of the router's life the venue was up",
                             ["venue"], registry=r)
        self.m_score = Gauge("te_route_venue_score", "the venue's live score (engine/routing/monitor.py)", ["venue"],
                             registry=r)
        self.m_fill = Gauge("te_route_venue_fill_ratio", "quantity filled / quantity sent in IOC and FOK children",
                            ["venue"], registry=r)
        self.m_ack = Histogram("te_route_child_ack_seconds", "child order written -> its first report from the venue",
                               ["venue"], buckets=LATENCY_BUCKETS, registry=r)
        self.m_children = Counter("te_route_children", "child orders sent", ["venue"], registry=r)
        self.m_rejects = Counter("te_route_child_rejects", "child orders the venue rejected", ["venue", "reason"],
                                 registry=r)
        self.m_filled = Counter("te_route_child_filled_qty", "quantity filled at the venue, qty units", ["venue"],
                                registry=r)
        self.m_disconnects = Counter("te_route_venue_disconnects", "sessions with the venue that ended", ["venue"],
                                     registry=r)
        self.c_children = {}                                    # venue -> its labelled child (labels() costs ~3 us)
        for i, n in enumerate(names, 1):
            self.m_up.labels(n).set(0)
            self.m_degraded.labels(n).set(0)
            self.c_children[i] = self.m_children.labels(n)
            self.m_filled.labels(n)
            self.m_disconnects.labels(n)
        self.rerank()

    # -- from the router --
    def child_sent(self, venue: int, frame: bytes) -> None:
        if frame[2] == MsgType.NEW_ORDER:
            st = self.stats[venue]
            st.children += 1
            st.sent_qty += int.from_bytes(frame[8 + 24:8 + 32], "little", signed=True)   # NewOrder.qty @24
            self.c_children[venue].inc()

    def report(self, venue: int, msg_type: int, r: tuple, child) -> None:
        if child is None:
            return
        st, name = self.stats[venue], self.names[venue - 1]
        if child.sent_ns and r[R["cmd_kind"]] == CommandKind.NEW_ORDER and \
                msg_type in (MsgType.ACCEPTED, MsgType.REJECTED) and child.state == 1:
            dt = (time.perf_counter_ns() - child.sent_ns) / 1e9
            st.acks.append(dt)
            st.sorted_acks = None
            self.m_ack.labels(name).observe(dt)
            st.outcomes.append(1 if msg_type == MsgType.REJECTED else 0)
            if msg_type == MsgType.REJECTED:
                st.rejects += 1
                self.m_rejects.labels(name, str(r[R["reason"]])).inc()
            self.rerank()
        if msg_type == MsgType.FILL and child.tif in (TimeInForce.IOC, TimeInForce.FOK):
            st.filled_qty += r[R["qty"]]
            self.m_filled.labels(name).inc(r[R["qty"]])
            self.m_fill.labels(name).set(st.fill_ratio())

    def up(self, venue: int) -> None:
        st = self.stats[venue]
        now = time.monotonic()
        if st.down_since is not None:
            st.down_s += now - st.down_since
            st.down_since = None
        st.up_since = now
        self.m_up.labels(self.names[venue - 1]).set(1)
        self.rerank()

    def down(self, venue: int) -> None:
        st = self.stats[venue]
        now = time.monotonic()
        if st.up_since is not None:
            st.up_s += now - st.up_since
            st.up_since = None
            st.down_since = now
            self.m_disconnects.labels(self.names[venue - 1]).inc()
        self.m_up.labels(self.names[venue - 1]).set(0)
        self.rerank()

    # -- the score --
    def score(self, venue: int) -> float:
        st = self.stats[venue]
        return st.availability() * st.fill_ratio() * (1 - st.reject_ratio()) / (1 + st.pct(0.99) * 1e3 / 10)

    def rerank(self) -> None:
        """The router's tie-break order: venues up, healthy before degraded, higher score first."""
        up = [v for v in self.stats if self.stats[v].up_since is not None]
        degraded = set()
        for v, st in self.stats.items():
            bad = len(st.acks) >= self.min_samples and (st.pct(0.99) * 1e3 > self.p99_ms or
                                                        st.reject_ratio() > self.reject_max)
            name = self.names[v - 1]
            if bad:
                degraded.add(v)
            if bad != (v in self.router.degraded):
                log.warning("venue %s", "degraded: demoted" if bad else "healthy again", extra={
                    "event": "venue_degraded" if bad else "venue_healthy", "venue": name,
                    "p99_ms": round(st.pct(0.99) * 1e3, 3), "reject_ratio": round(st.reject_ratio(), 3)})
            self.m_degraded.labels(name).set(1 if bad else 0)
        order = sorted(up, key=lambda v: (v in degraded, -round(self.score(v), 6), v))
        self.router.rank = {v: i for i, v in enumerate(order)}
        self.router.degraded = degraded

    def snapshot(self) -> list[dict]:
        out = []
        for v, st in self.stats.items():
            self.m_avail.labels(self.names[v - 1]).set(st.availability())
            self.m_score.labels(self.names[v - 1]).set(self.score(v))
            out.append({"venue": self.names[v - 1], "up": st.up_since is not None,
                        "degraded": v in self.router.degraded, "rank": self.router.rank.get(v),
                        "score": round(self.score(v), 4), "availability": round(st.availability(), 4),
                        "ack_p50_ms": round(st.pct(0.5) * 1e3, 3), "ack_p99_ms": round(st.pct(0.99) * 1e3, 3),
                        "children": st.children, "rejects": st.rejects, "fill_ratio": round(st.fill_ratio(), 4),
                        "taker_fee_bps": self.router.taker_bps[v], "maker_fee_bps": self.router.maker_bps[v]})
        return out
