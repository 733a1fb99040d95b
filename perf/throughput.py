"""Sustained throughput: closed-loop pipelined sessions against the server (pinned to one
core) from this generator (pinned to the other).

Each session has its order flow pre-encoded as one byte string (perf/roundtrip.py
`stream`: GTC limits away from the touch, each cancelled 200 orders later, so every
order is two messages in and two reports out) and keeps at most --window orders
unacknowledged: it sends the next slice as soon as acknowledgements come back.
Replies are received into one preallocated buffer per session and only counted
(order k's ACCEPTED ends at a known offset of the reply stream); after the run
every session's reply stream is checked report by report. Orders/s = orders
acknowledged / time from the first send to the last acknowledgement.

The echo variant runs the same generator against perf/echo.py (every byte written
straight back), which shows how much the generator and loopback can carry: the
server's figure is only meaningful while it is well below the echo figure. CPU
time of both processes is reported (who is saturated).
"""
from __future__ import annotations

import bisect
import os
import socket
import time

import numpy as np

from perf import roundtrip as rt
from engine.testing import SECRETS


class Session:
    def __init__(self, port, account, n, echo):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if echo:
            rest, self.first_clid = b"", 1
        else:
            rest, self.first_clid = rt.logon(self.sock, account, SECRETS[account])
        self.data, send_end, order_end = rt.stream(n, self.first_clid)
        self.send_end = send_end.tolist()
        self.ack_end = (order_end if echo else rt.expected_reports(n)).tolist()
        self.need = self.ack_end[-1]
        self.rbuf = bytearray(max(self.need, len(self.data)) + (1 << 20))
        self.rview = memoryview(self.rbuf)
        self.rbuf[:len(rest)] = rest
        self.got = len(rest)
        self.view = memoryview(self.data)
        self.sent = 0
        self.acked = 0
        self.n = n
        self.echo = echo
        self.sock.setblocking(False)

    def pump(self, window):
        """Send what the window allows; receive what is there. True while not done."""
        if self.sent < len(self.data):
            limit = self.send_end[min(self.n, self.acked + window) - 1]
            if self.sent < limit:
                try:
                    self.sent += self.sock.send(self.view[self.sent:limit])
                except BlockingIOError:
                    pass
        try:
            r = self.sock.recv_into(self.rview[self.got:])
        except BlockingIOError:
            return True
        if r == 0:
            raise RuntimeError("the server closed the connection")
        self.got += r
        self.acked = bisect.bisect_right(self.ack_end, self.got)
        return self.got < self.need

    def verify(self):
        if self.echo:
            if bytes(self.rbuf[:len(self.data)]) != self.data:
                raise RuntimeError("the echo server changed the bytes")
        else:
            rt.verify_reports(bytes(self.rbuf[:self.got]), self.n, self.first_clid)
        self.sock.close()


def run(port, sessions, n, window, echo=False, timeout=60.0, server_pid=None):
    ss = [Session(port, 1 + i % len(SECRETS), n, echo) for i in range(sessions)]
    live = list(ss)
    noise = rt.Noise(server_pid)
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while live:
        live = [s for s in live if s.pump(window)]
        if time.perf_counter() > deadline:
            raise RuntimeError("throughput run timed out")
    dt = time.perf_counter() - t0
    cpu = noise.result()
    for s in ss:
        s.verify()
    total = n * sessions
    return dict(orders=total, seconds=dt, orders_per_s=total / dt, messages_in_per_s=2 * total / dt, **cpu)


def scenario(args):
    os.sched_setaffinity(0, {args.cpu if args.cpu is not None else 1})
    variants = (["echo"] if args.echo else []) + list(args.durability) + (["none+risk"] if args.risk else [])
    results = {v: dict(sessions=args.pipelined, window=args.window, orders_per_session=args.orders_per_session,
                       runs=[]) for v in variants}
    # the generator reads as fast as it can, but a whole window of replies may sit in the server's buffer
    with rt.Targets(variants, args.server_cpu, output_buffer_bytes=64 << 20) as targets:
        for _ in range(args.runs):
            for v in variants:
                if args.quiet_wait:
                    rt.wait_quiet(args.quiet_wait)
                before = None if v == "echo" else rt.batch_stats(targets.server(v).ops_port)
                r = run(targets.port(v), args.pipelined, args.orders_per_session, args.window, echo=v == "echo",
                        server_pid=targets.pid(v))
                if before is not None:
                    rt.with_batch_stats(r, before, rt.batch_stats(targets.server(v).ops_port))
                results[v]["runs"].append(r)
    for v in variants:
        rates = [r["orders_per_s"] for r in results[v]["runs"]]
        results[v]["orders_per_s"] = dict(median=float(np.median(rates)), min=min(rates), max=max(rates))
    return results
