"""Authentication bookkeeping beside the engine: none of it is in the core's deterministic
state, the journal's records or a snapshot.

- Failures: failed logons (trading port) and failed password checks (admin listener), counted
  per key in a window of `lockout_s`: per (account, address), per account and per address for
  logons, per address and per operator for the admin listener, each key type with its own
  threshold (server config). A key at its threshold is locked out for `lockout_s`. Bounded:
  at most `auth_failure_entries` keys per listener, the one that expires first dropped when
  full, and every key dropped when it expires (Auth.expire, on the server's timer).
- LogonStore: the last accepted logon timestamp per account, in a small LMDB environment of
  its own (`<journal.path>/logons/`, one 12-byte row per account), written and fsynced on a
  thread of its own before LOGON_ACCEPTED is sent, read at start-up. Fsynced with `async`
  durability too: logons are rare, and an LMDB environment written without fsyncs can be left
  pointing past its file's end by a power cut (a restart then died of SIGBUS opening it).
  A logon's timestamp must exceed the account's last accepted one, so a captured LOGON cannot
  be replayed, neither before nor after a restart (protocol/SPEC.md, session rule 1).
- RateLog: refused logons and admin authentications are logged (reason, account or operator,
  peer) at most `refused_logon_logs_per_s` lines a second; the rest are counted, and the next
  line says how many were not logged.
- PasswordChecks: the admin listener's scrypt checks, at most `admin_password_checks` at once,
  on threads of their own placed off the engine's CPU (server.helper_setup). An unknown
  operator name is checked against a dummy hash of the same cost, so both failure paths take
  one scrypt.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import struct
import threading
import time
from collections import OrderedDict

import lmdb
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from engine.journal import check_data_size
from protocol.codes import Reject

log = logging.getLogger("trading-engine")

LOGONS_DIR = "logons"                  # beside data.mdb and snapshots/
LOGON_KEY = struct.Struct(">I")        # 4 bytes: account id
LOGON_VALUE = struct.Struct("<q")      # 8 bytes: timestamp_ns of the last accepted logon


class Failures:
    """Failure counts per key, each in a window of `window_s` from its first failure; a key whose
    count reaches its threshold is locked until `window_s` after that failure. Keys are kept in
    the order they expire (every change of an expiry sets it to now + window_s and moves the key
    to the end), so expire() and eviction both drop from the front."""

    def __init__(self, capacity: int, window_s: float):
        self.capacity = capacity
        self.window_ns = int(window_s * 1e9)
        self.entries: OrderedDict = OrderedDict()    # key -> [failures, expiry (monotonic ns)]
        self.evicted = 0

    def __len__(self):
        return len(self.entries)

    def locked(self, key, threshold: int, now: int) -> bool:
        e = self.entries.get(key)
        return e is not None and e[0] >= threshold and now < e[1]

    def fail(self, key, threshold: int, now: int) -> None:
        e = self.entries.get(key)
        if e is None or now >= e[1]:
            e = [0, now + self.window_ns]
            self.entries.pop(key, None)
            self.entries[key] = e
        e[0] += 1
        if e[0] == threshold:            # locked from now for a whole window
            e[1] = now + self.window_ns
            self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
            self.evicted += 1

    def clear(self, key) -> None:
        self.entries.pop(key, None)

    def expire(self, now: int) -> None:
        entries = self.entries
        while entries:
            key, e = next(iter(entries.items()))
            if e[1] > now:
                return
            del entries[key]


class RateLog:
    """log.warning at most `per_s` lines a second (a burst of as many), counting the rest."""

    def __init__(self, per_s: float):
        self.per_s = per_s
        self.burst = max(1.0, per_s)
        self.tokens = self.burst
        self.last = time.monotonic()
        self.dropped = 0

    def __call__(self, fmt: str, *args, extra: dict | None = None) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.per_s)
        self.last = now
        if self.tokens < 1:
            self.dropped += 1
            return
        self.tokens -= 1
        extra = dict(extra or {})
        if self.dropped:
            fmt += " (%d more not logged)"
            args += (self.dropped,)
            extra["not_logged"] = self.dropped
            self.dropped = 0
        log.warning(fmt, *args, extra=extra)


class LogonStore:
    """The last accepted logon timestamp per account, durable (see the module docstring)."""

    def __init__(self, journal_path: str, durability: str, max_accounts: int):
        path = os.path.join(journal_path, LOGONS_DIR)
        os.makedirs(path, exist_ok=True)
        check_data_size(path, empty_ok=True)    # a store cut short is refused by name, before LMDB maps it (no SIGBUS)
        self.env = lmdb.open(path, map_size=max(1 << 20, max_accounts * 256), subdir=True, sync=True,
                             metasync=True, writemap=False, max_dbs=0)
        self.last: dict[int, int] = {}
        with self.env.begin() as txn:
            for k, v in txn.cursor():
                self.last[LOGON_KEY.unpack(k)[0]] = LOGON_VALUE.unpack(v)[0]

    def put(self, account: int, ts: int) -> None:
        """On the store's thread: one write transaction and its fsync."""
        with self.env.begin(write=True) as txn:
            txn.put(LOGON_KEY.pack(account), LOGON_VALUE.pack(ts))

    def close(self) -> None:
        self.env.close()


class PasswordChecks:
    """The admin listener's scrypt checks: at most `concurrency` at once, off the event loop and
    (helper_setup) off the engine's CPU; counted for /metrics."""

    def __init__(self, concurrency: int, thread_setup):
        self.pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="admin-auth",
                                                          initializer=thread_setup)
        self.lock = threading.Lock()
        self.checks = 0                  # scrypt runs
        self.running = 0
        self.max_running = 0             # the most ever run at once

    def _run(self, fn, *args):
        with self.lock:
            self.checks += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            return fn(*args)
        finally:
            with self.lock:
                self.running -= 1

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._run, fn, *args)


class Auth:
    """The server's authentication state (one per Server)."""

    def __init__(self, cfg, thread_setup):
        s = cfg.server
        self.cfg = s
        self.logon_failures = Failures(s.auth_failure_entries, s.lockout_s)
        self.admin_failures = Failures(s.auth_failure_entries, s.lockout_s)
        self.refusal_log = RateLog(s.refused_logon_logs_per_s)
        self.refused: dict[int, int] = {}            # Reject -> logons refused
        self.admin_refused = 0
        self.thread_setup = thread_setup
        self.store = None
        self.store_pool = None
        if cfg.journal.durability != "none":
            self.store = LogonStore(cfg.journal.path, cfg.journal.durability, cfg.engine.max_accounts)
            self.store_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="logon-store",
                                                                    initializer=thread_setup)
        self.last_logon: dict[int, int] = dict(self.store.last) if self.store else {}
        self._admin_checks = None

    # -- trading logons --
    def logon_locked(self, account: int, known: bool, peer) -> bool:
        s, now, f = self.cfg, time.monotonic_ns(), self.logon_failures
        return f.locked(("pair", account, peer), s.lockout_failures, now) or \
            f.locked(("addr", peer), s.address_lockout_failures, now) or \
            (known and f.locked(("acct", account), s.account_lockout_failures, now))

    def logon_failed(self, account: int, known: bool, peer) -> None:
        s, now, f = self.cfg, time.monotonic_ns(), self.logon_failures
        f.fail(("pair", account, peer), s.lockout_failures, now)
        f.fail(("addr", peer), s.address_lockout_failures, now)
        if known:                        # an unknown id has no account to lock
            f.fail(("acct", account), s.account_lockout_failures, now)

    def logon_succeeded(self, account: int, peer) -> None:
        self.logon_failures.clear(("pair", account, peer))

    def logon_refused(self, reason: int, account: int, peer) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self.refusal_log("logon refused: %s account=%d peer=%s", Reject(reason).name, account, peer,
                         extra={"event": "logon_refused", "reason": Reject(reason).name, "account": account,
                                "peer": peer})

    def claim_logon(self, account: int, ts: int):
        """Take `ts` as the account's last logon: None if it is not after the last one (a replay),
        else a concurrent future that is done once it is durable (already done without a journal).
        Claimed in memory at once, so a second logon with the same or an older timestamp is
        refused while the first one's write is in flight."""
        if ts <= self.last_logon.get(account, 0):
            return None
        self.last_logon[account] = ts
        if self.store is None:
            fut = concurrent.futures.Future()
            fut.set_result(None)
            return fut
        return self.store_pool.submit(self.store.put, account, ts)

    # -- admin listener --
    @property
    def admin_checks(self) -> PasswordChecks:
        if self._admin_checks is None:
            self._admin_checks = PasswordChecks(self.cfg.admin_password_checks, self.thread_setup)
        return self._admin_checks

    def admin_locked(self, user: str, peer) -> bool:
        s, now, f = self.cfg, time.monotonic_ns(), self.admin_failures
        return f.locked(("addr", peer), s.admin_lockout_failures, now) or \
            f.locked(("user", user), s.admin_operator_lockout_failures, now)

    def admin_failed(self, user: str, peer, locked: bool) -> None:
        self.admin_refused += 1
        if not locked:
            s, now, f = self.cfg, time.monotonic_ns(), self.admin_failures
            f.fail(("addr", peer), s.admin_lockout_failures, now)
            f.fail(("user", user), s.admin_operator_lockout_failures, now)
        self.refusal_log("admin authentication refused%s: user=%r peer=%s", " (locked out)" if locked else "",
                         user, peer, extra={"event": "admin_auth_refused", "operator": user, "peer": peer,
                                            "locked_out": locked})

    # -- upkeep --
    def expire(self) -> None:
        now = time.monotonic_ns()
        self.logon_failures.expire(now)
        self.admin_failures.expire(now)

    def close(self) -> None:
        if self.store_pool is not None:
            self.store_pool.shutdown(wait=True)
            self.store.close()
        if self._admin_checks is not None:
            self._admin_checks.pool.shutdown(wait=False)

    def metrics(self):
        entries = GaugeMetricFamily("te_auth_failure_entries", "failure records kept for lockouts (bounded by "
                                    "server.auth_failure_entries per listener)", labels=["listener"])
        entries.add_metric(["trading"], len(self.logon_failures))
        entries.add_metric(["admin"], len(self.admin_failures))
        yield entries
        refused = CounterMetricFamily("te_logons_refused", "logons refused, by reason", labels=["reason"])
        for reason, n in sorted(self.refused.items()):
            refused.add_metric([Reject(reason).name], n)
        yield refused
        yield CounterMetricFamily("te_admin_auth_refused", "admin requests refused authentication (locked out "
                                  "included)", value=self.admin_refused)
        c = self._admin_checks
        yield CounterMetricFamily("te_admin_password_checks", "admin password checks run (one scrypt each, an "
                                  "unknown operator's included)", value=c.checks if c else 0)
        yield GaugeMetricFamily("te_admin_password_checks_max_concurrent", "the most admin password checks "
                                "ever run at once (server.admin_password_checks bounds it)",
                                value=c.max_running if c else 0)
