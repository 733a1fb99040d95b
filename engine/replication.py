"""Journal shipping to NATS JetStream, the leader lease and the hot standby (engine/SCALING.md).

The primary publishes every committed journal record (the bytes LMDB holds: the batch's commands
in order, its events, the previous record's digest and its own: the hash chain) to one stream,
after the local commit, from the commit thread. Large records go in parts of at most the NATS
server's max_payload. Each message carries headers:

    te-first, te-last   the record's first and last command seq
    te-part             "i/n": part i of n (the record is the parts' payloads joined)
    te-state            on the last part, every replication.state_hash_every batches: the
                        engine's state hash after the record, hex (the standby checks it)
    Nats-Msg-Id         node.lease revision.first.part (a retried publish is deduplicated)
    Nats-Expected-Last-Sequence
                        the stream sequence this node published or applied last: a publish after
                        another node's is refused by JetStream (fencing, beside the lease)

A standby (`trading-engine serve --standby`) reads the stream with an ordered consumer and
applies each record through its own engine (events compared byte for byte with the record's),
appends it to its own journal (the same digest, so the same chain) and checks the shipped state
hash. The leader lease is one key in a JetStream key-value bucket; the holder renews it (a
compare-and-set on its revision) every lease_ms / 4. A standby that sees the same revision for
lease_ms (or no key) takes the lease with a compare-and-set, applies the stream to its end and
serves. A primary whose renewal fails (the key moved on, or lease_ms passed since the last
renewal it sent) is fenced: it acknowledges nothing more (Server.fence).

All NATS work runs on this module's own thread and event loop (nats-py is asyncio): the commit
thread waits there for the publish acknowledgement (durability `replicated`) without ever
blocking the server's loop, which itself blocks on the commit thread in Server.flush.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import socket
import struct
import threading
import time

log = logging.getLogger("trading-engine")

POS_FILE = "replication.pos"     # in the journal directory: the stream seq of the last record applied/published
LEASE_KEY = "leader"
WRONG_LAST_SEQUENCE = (10071, 10164)     # JetStream: Nats-Expected-Last-Sequence did not match
HEADER_ROOM = 4096               # of max_payload, left for the headers
APPLY_BATCH = 256                # a standby commits up to this many records off the stream at once


class ReplicationError(Exception):
    """This node cannot replicate as configured (one line naming why)."""


class Fenced(ReplicationError):
    """This node may not acknowledge: it does not hold the leader lease (lost, lapsed, never
    taken) or the stream has moved past what it published."""


class Diverged(ReplicationError):
    """The stream and this node's journal disagree: the node cannot follow or serve."""


class Record:
    """One journal record read off the stream."""
    __slots__ = ("first", "last", "value", "state", "stream_seq")

    def __init__(self, first, last, value, state, stream_seq):
        self.first, self.last, self.value, self.state, self.stream_seq = first, last, value, state, stream_seq


class Replicator:
    def __init__(self, cfg, journal_path: str):
        self.cfg = cfg
        self.r = r = cfg.replication
        self.node = r.node or socket.gethostname()
        self.replicated = cfg.journal.durability == "replicated"
        self.lease_s = r.lease_ms / 1000
        self.timeout = r.publish_timeout_ms / 1000
        self.nc = self.js = self.kv = None
        self.stream_seq = 0          # stream seq of the last message this node published or applied
        self.rev = 0                 # the lease revision this node holds
        self.term = 0                # the revision it took the lease at (message ids)
        self.deadline = 0.0          # monotonic time its lease lapses (0: not held)
        self.fenced = None           # why this node may no longer acknowledge (None: it may)
        self.on_fenced = None        # called with the reason on the server's loop
        self.server_loop = None
        self.chunk = 1 << 20
        self.published = 0           # records published (status)
        self.applied = 0             # records applied from the stream (status)
        self.lag = 0                 # stream messages not yet applied, as last seen (standby)
        self.follower = None
        self.applier = None
        self.pos_fd = os.open(os.path.join(journal_path, POS_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        raw = os.pread(self.pos_fd, 8, 0)
        self.saved_pos = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="te-repl", daemon=True)
        self.thread.start()
        self.lock = None

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro, timeout=None):
        """Run a coroutine on the replication loop from another thread and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, coro):
        """From the server's loop: await a coroutine that runs on the replication loop."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def status(self) -> dict:
        return {"node": self.node, "leader": self.deadline > time.monotonic() and self.fenced is None,
                "fenced": self.fenced, "stream_seq": self.stream_seq, "published": self.published,
                "applied": self.applied, "lag": self.lag}

    def _save_pos(self):
        os.pwrite(self.pos_fd, struct.pack("<Q", self.stream_seq), 0)

    # -- connection, stream, bucket --
    async def connect(self):
        import nats
        from nats.js import api
        r = self.r
        self.lock = asyncio.Lock()

        async def disconnected():
            log.warning("replication: disconnected from NATS")

        async def reconnected():
            log.info("replication: reconnected to NATS")

        said = [0.0, ""]

        async def error(e):                  # (while no server answers, once per attempt: said once per 5 s)
            now = time.monotonic()
            if str(e) != said[1] or now - said[0] >= 5:
                said[0], said[1] = now, str(e)
                log.warning("replication: NATS %s: %s", ", ".join(r.servers), e)

        self.nc = await nats.connect(r.servers, name=self.node, connect_timeout=2, max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.1, disconnected_cb=disconnected,
                                     reconnected_cb=reconnected, error_cb=error)
        self.chunk = max(1024, self.nc.max_payload - HEADER_ROOM)
        self.js = self.nc.jetstream(timeout=self.timeout)
        deadline = time.monotonic() + 30
        while True:                  # a new cluster elects its meta leader first
            try:
                try:
                    await self.js.stream_info(r.stream)
                except Exception:
                    await self.js.add_stream(name=r.stream, subjects=[r.subject], num_replicas=r.replicas,
                                             storage=api.StorageType.FILE, allow_direct=True,
                                             duplicate_window=120.0)
                try:
                    self.kv = await self.js.key_value(r.lease_bucket)
                except Exception:
                    self.kv = await self.js.create_key_value(bucket=r.lease_bucket, history=1,
                                                             ttl=max(1.0, 2 * self.lease_s), replicas=r.replicas)
                return
            except Exception as e:
                if time.monotonic() > deadline:
                    raise
                log.info("replication: JetStream not ready (%s), retrying", e)
                await asyncio.sleep(0.25)

    async def stream_end(self):
        """(stream seq of the last message, last command seq it holds, digest of that record
        (its last 16 bytes) or None); (0, 0, None) for an empty stream."""
        info = await self.js.stream_info(self.r.stream)
        last = info.state.last_seq
        if not last or info.state.messages == 0:
            return last or 0, 0, None
        msg = await self.js.get_msg(self.r.stream, seq=last, direct=True)
        return last, int(msg.headers["te-last"]), bytes(msg.data[-16:])

    # -- the lease --
    def _lease_value(self):
        return json.dumps({"node": self.node, "address": self.r.address}).encode()

    async def lease_holder(self):
        """(holder's node name, revision) or None when the key is absent."""
        from nats.js.errors import KeyNotFoundError
        try:
            e = await self.kv.get(LEASE_KEY)
        except KeyNotFoundError:
            return None
        try:
            return json.loads(e.value)["node"], e.revision
        except (ValueError, KeyError):
            return "?", e.revision

    async def try_acquire(self, seen):
        """Take the lease if it is free, or has kept one revision for lease_ms on this node's clock
        (`seen`: a dict this method keeps between calls). True when taken."""
        from nats.js.errors import KeyWrongLastSequenceError
        now = time.monotonic()
        holder = await self.lease_holder()
        t0 = time.monotonic()
        try:
            if holder is None:
                rev = await self.kv.create(LEASE_KEY, self._lease_value())
            else:
                if seen.get("rev") != holder[1]:
                    seen["rev"], seen["at"], seen["node"] = holder[1], now, holder[0]
                    return False
                if now - seen["at"] < self.lease_s:
                    return False
                rev = await self.kv.update(LEASE_KEY, self._lease_value(), last=holder[1])
        except KeyWrongLastSequenceError:
            return False
        self.rev = self.term = rev
        self.deadline = t0 + self.lease_s
        self.fenced = None
        return True

    async def renew_forever(self):
        """On the leader: renew every lease_ms / 4 until the lease is lost (then fence)."""
        from nats.js.errors import KeyWrongLastSequenceError, KeyNotFoundError
        wait = self.lease_s / 4
        while self.fenced is None:
            await asyncio.sleep(wait)
            t0 = time.monotonic()
            if t0 >= self.deadline:
                self.lose("the leader lease lapsed (not renewed within lease_ms)")
                return
            try:
                self.rev = await asyncio.wait_for(self.kv.update(LEASE_KEY, self._lease_value(), last=self.rev),
                                                  self.deadline - t0)
                self.deadline = t0 + self.lease_s
                wait = self.lease_s / 4
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                self.lose("the leader lease was taken by another node")
                return
            except Exception as e:          # no quorum, no connection (a NATS node lost: its streams elect
                log.warning("replication: lease renewal failed: %s", e)     # a leader): retried soon
                wait = min(0.1, self.lease_s / 4)

    def lose(self, reason):
        """Fence this node (any thread may call it)."""
        if self.fenced is not None:
            return
        self.fenced = reason
        self.deadline = 0.0
        log.error("replication: fenced: %s; acknowledging nothing more", reason, extra={"event": "fenced"})
        if self.on_fenced is not None and self.server_loop is not None:
            try:
                self.server_loop.call_soon_threadsafe(self.on_fenced, reason)
            except RuntimeError:
                pass

    async def release(self):
        """At a graceful stop, after the publishes queued before it (the lock is first come, first
        served): delete the lease (compare-and-set), so a standby takes over at once."""
        async with self.lock:
            pass
        if self.fenced is None and self.deadline > time.monotonic():
            self.fenced = "stopped"
            try:
                await self.kv.delete(LEASE_KEY, last=self.rev)
            except Exception as e:
                log.info("replication: lease not released (%s); it lapses in lease_ms", e)

    # -- shipping (the primary) --
    def ship(self, value: bytes, first: int, last: int, state):
        """On the commit thread, after the local commit. `replicated`: returns after JetStream
        acknowledged every part, else raises Fenced (nothing of the batch may be acknowledged).
        Otherwise the publish is queued (in order) and this returns at once."""
        if self.fenced is not None:
            raise Fenced(self.fenced)
        fut = asyncio.run_coroutine_threadsafe(self._ship(value, first, last, state), self.loop)
        if not self.replicated:
            fut.add_done_callback(self._shipped)
            return
        try:
            fut.result()
        except Fenced:
            raise
        except Exception as e:
            self.lose(f"publish failed: {e!r}")
            raise Fenced(self.fenced) from e

    def _shipped(self, fut):
        e = fut.exception()
        if e is not None and not isinstance(e, Fenced):
            self.lose(f"publish failed: {e!r}")

    async def _ship(self, value, first, last, state):
        from nats.errors import NoRespondersError, TimeoutError as NatsTimeout
        from nats.js.errors import APIError, NoStreamResponseError
        async with self.lock:
            n = max(1, -(-len(value) // self.chunk))
            for i in range(n):
                hdr = {"Nats-Msg-Id": f"{self.node}.{self.term}.{first}.{i}",
                       "Nats-Expected-Last-Sequence": str(self.stream_seq),
                       "te-first": str(first), "te-last": str(last), "te-part": f"{i}/{n}"}
                if state is not None and i == n - 1:
                    hdr["te-state"] = f"{state:016x}"
                give_up = time.monotonic() + self.lease_s      # the lease may be renewed meanwhile
                while True:
                    if self.fenced is not None:
                        raise Fenced(self.fenced)
                    now = time.monotonic()
                    left = self.deadline - now
                    if left <= 0:
                        self.lose("the leader lease lapsed before the publish was acknowledged")
                        raise Fenced(self.fenced)
                    if now >= give_up:           # the stream is unavailable, the lease bucket is not
                        self.lose("the stream did not acknowledge a publish within lease_ms")
                        raise Fenced(self.fenced)
                    try:
                        ack = await self.js.publish(self.r.subject, value[i * self.chunk:(i + 1) * self.chunk],
                                                    headers=hdr, timeout=min(self.timeout, left))
                        break
                    except APIError as e:
                        if e.err_code in WRONG_LAST_SEQUENCE:
                            self.lose("the stream moved past this node's last publish: another node leads")
                            raise Fenced(self.fenced) from None
                        raise
                    except (NatsTimeout, asyncio.TimeoutError, NoRespondersError, NoStreamResponseError) as e:
                        log.warning("replication: publish at seq %d not acknowledged (%r), retrying", first, e)
                        await asyncio.sleep(0.01)
                self.stream_seq = ack.seq
            self.published += 1
            self._save_pos()

    # -- following (the standby) --
    async def follow(self, apply, start_seq):
        """Deliver the complete records from stream seq start_seq on to `apply(records)` (a
        coroutine function run on this loop that returns when they are applied), in order, as
        many at a time as have arrived meanwhile (up to APPLY_BATCH: one journal commit)."""
        from nats.js import api
        parts = []
        inbox: asyncio.Queue = asyncio.Queue(maxsize=4 * APPLY_BATCH)    # full: the consumer waits

        async def on_msg(msg):
            h = msg.headers or {}
            i, n = (int(x) for x in h["te-part"].split("/"))
            if i == 0:
                parts.clear()
            parts.append(bytes(msg.data))
            if i < n - 1:
                return
            if len(parts) != n:
                log.error("replication: record at seq %s arrived with %d of %d parts", h["te-first"], len(parts), n)
                parts.clear()
                return
            value = parts[0] if n == 1 else b"".join(parts)
            parts.clear()
            state = h.get("te-state")
            self.lag = msg.metadata.num_pending
            await inbox.put(Record(int(h["te-first"]), int(h["te-last"]), value,
                                   int(state, 16) if state else None, msg.metadata.sequence.stream))

        async def applier():
            while True:
                recs = [await inbox.get()]
                while not inbox.empty() and len(recs) < APPLY_BATCH:
                    recs.append(inbox.get_nowait())
                await apply(recs)

        self.applier = asyncio.ensure_future(applier())
        cfg = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start_seq))
        self.follower = await self.js.subscribe(self.r.subject, stream=self.r.stream, cb=on_msg,
                                                ordered_consumer=True, config=cfg, idle_heartbeat=1.0)

    async def stop_following(self):
        if self.applier is not None:
            self.applier.cancel()
            self.applier = None
        if self.follower is not None:
            try:
                await self.follower.unsubscribe()
            except Exception:
                pass
            self.follower = None

    async def close(self):
        await self.stop_following()
        if self.nc is not None:
            try:
                await self.nc.drain()
            except Exception:
                pass

    def shutdown(self):
        try:
            self.call(self.close(), timeout=5)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        os.close(self.pos_fd)
