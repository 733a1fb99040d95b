"""The trading server: one process, one thread, one uvloop event loop.

The hot path of one read is one Cython call, gateway.Hot.step: it walks the read's
complete frames into core Commands of the open batch (no Python object per message),
stamps each with its sequence number and receive time, applies it in the engine at
once, counts it for /metrics, and encodes the execution reports of the events it
caused into one bytes object per account, sequenced per account.

Without a journal the reports are written at once (one transport.write per
connection per read). With one (group commit, off the event loop):
  1. reads keep applying into the open batch while a commit is in flight;
  2. when no commit is in flight the open batch is sealed (its commands and events
     copied out) and handed to the single commit thread; LMDB's commit (the fsync)
     releases the GIL, so the loop keeps reading and the engine keeps processing;
  3. when the commit returns the loop seals the batch that accumulated meanwhile
     (the next single commit: batches grow under load), then writes the committed
     batch's reports (one write per connection) and appends them to the replay rings.
Commits run one at a time, in order. Nothing is written to a socket before the
commit of what it acknowledges returns. A failed commit stops state changes.
Session messages (logon, heartbeat, logout), throttled frames and queries are
handled in Python: a connection's walk stops in front of one, the frame is answered
at once from the engine's state as it is (after every command applied before it,
this session's included), and the walk resumes. The loop never waits for a commit
there: the answer is held (Server.hold) behind the reports of every command applied
before it, in the batch still to be committed, and written when that batch's commit
returns (in _deliver, between the reports before it and those after), so replies keep
wire order and nothing the answer shows leaves before it is committed. A market-data
request (SUBSCRIBE, UNSUBSCRIBE, RECENT_TRADES) is answered where the trade rings and
the market data published per batch stand: at once when no batch is open, else its
connection alone pauses until the open batch is sealed (Server.dispatch) and is
answered there. Only a full open batch still waits for the commit in flight (flush()).
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import fcntl
import gc
import hashlib
import hmac
import logging
import os
import signal
import socket
import struct
import sys
import termios
import threading
import time
from collections import deque
from importlib import metadata

import lmdb
import numpy as np

from engine import config as cfgmod
from engine import admin as adminmod, auth as authmod, feeds as feedsmod, gateway, ops as opsmod, riskqueries, \
    snapshot, tls as tlsmod
from engine import replication as replmod
from engine.core import Engine
from engine import algos as algosmod
from engine.algos import Algos
from engine.risk import Risk
from engine.journal import Journal, JournalError, JournalRefused, decode_record
from protocol import wire
from protocol.codes import AccountState, CommandKind, KycState, Reject, Side, SymbolState
from protocol.units import to_units
from protocol.records import COMMAND, EVENT, SET_LIMIT_TARGET
from protocol.wire import MsgType

log = logging.getLogger("trading-engine")

REPORT_SIZE = wire.frame_size(MsgType.ACCEPTED)
BATCH_CAP = 1 << 16
ORDER_TYPES = frozenset({MsgType.NEW_ORDER, MsgType.CANCEL, MsgType.AMEND, MsgType.MASS_CANCEL})
# execution algorithms (engine/ALGOS.md): client message -> the command it becomes (built in Python: rare)
ALGO_COMMANDS = {MsgType.ALGO_NEW: CommandKind.ALGO_NEW, MsgType.ALGO_CANCEL: CommandKind.ALGO_CANCEL,
                 MsgType.ALGO_PAUSE: CommandKind.ALGO_PAUSE, MsgType.ALGO_RESUME: CommandKind.ALGO_RESUME,
                 MsgType.ALGO_AMEND: CommandKind.ALGO_AMEND}
I64_MAX = (1 << 63) - 1
QUERY_RESPONSE = {MsgType.SYMBOL_DIRECTORY_REQUEST: MsgType.SYMBOL_DIRECTORY,
                  MsgType.BOOK_DEPTH_REQUEST: MsgType.BOOK_DEPTH, MsgType.OPEN_ORDERS_REQUEST: MsgType.OPEN_ORDERS,
                  MsgType.ORDER_STATUS_REQUEST: MsgType.ORDER_STATUS, MsgType.POSITIONS_REQUEST: MsgType.POSITIONS,
                  MsgType.PORTFOLIO_REQUEST: MsgType.PORTFOLIO, MsgType.RECENT_TRADES_REQUEST: MsgType.RECENT_TRADES,
                  MsgType.SUBSCRIBE: MsgType.SUBSCRIPTIONS, MsgType.UNSUBSCRIBE: MsgType.SUBSCRIPTIONS,
                  MsgType.ALGOS_REQUEST: MsgType.ALGOS,
                  MsgType.RECENT_TRADES_REQUEST: MsgType.RECENT_TRADES, **riskqueries.RESPONSE}
READ_BUFFER = 1 << 18
COMMIT_SWITCH_INTERVAL = 0.0001      # seconds; see Server.__init__
COMMIT_THREAD_NICE = -10             # see _raise_commit_thread_priority
SHUTDOWN_DRAIN_S = 1.0               # Server.stop: how long the last reports may take to reach clients
SLOW_CONSUMER_DRAIN_S = 5.0          # a slow consumer's LOGOUT: how long it has to read it before a reset
# a reply held in wire order (Server.hold): a group (HELD, connection, (kind, payload, position))
# among the (account, first seq, reports) groups of a batch; kinds:
HELD = -1
REPLY, QUERY, CLOSE = 0, 1, 2        # bytes; (bytes, response type, request id); a close reason or None;
MD_START = feedsmod.MD_START         # and a symbol whose new subscription starts (Feeds.started);
DONE = 4                             # and a callable(ok) (Server.after_commit: an admin action waiting)


HELPER_NICE = 19                     # see helper_setup
ENGINE_CPU: int | None = None        # [server] cpu, once serve() pinned the event loop's thread to it
HELPER_CPUS: set[int] = set()        # the CPUs the process may use besides it


def helper_setup(report=True):
    """On a helper thread or process (admin password checks, the snapshot writer): keep its CPU
    work off the engine's pinned core. When the process may use other CPUs (systemd CPUAffinity=
    listing more than [server] cpu), it runs on those; else it shares the engine's core at nice 19,
    so the event loop takes the core whenever it has work (an admin logon's scrypt is ~130 ms of
    CPU). report=False in a forked child, which must not log (a lock held at the fork)."""
    _name_thread("te-helper")
    if ENGINE_CPU is None:
        return
    try:
        if HELPER_CPUS:
            os.sched_setaffinity(0, HELPER_CPUS)           # 0: this thread (or process)
        else:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HELPER_NICE)
    except OSError as e:
        if report:
            log.info("helper keeps the engine's placement (%s)", e)


def _name_thread(name):
    """The calling thread's name as top, ps -L and /proc show it (Linux; best effort)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
            f.write(name)
    except OSError:
        pass


def _raise_commit_thread_priority():
    """On the commit thread: a higher priority than the loop thread it shares the engine's core
    with, so that when an fsync completes the thread runs at once instead of waiting out the
    busy loop thread's time slice (measured at 50k orders/s with `sync`: p50 1.48 -> 1.20 ms,
    p90 4.8 -> 2.4 ms, mean commit 0.78 -> 0.61 ms). It sleeps in I/O almost all the time.
    Needs CAP_SYS_NICE or RLIMIT_NICE (systemd: LimitNICE=); without, it runs at normal priority."""
    _name_thread("te-commit")
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), COMMIT_THREAD_NICE)
    except OSError as e:
        log.info("journal commit thread keeps normal priority (%s)", e)


try:                                     # read once: importlib.metadata costs ~1 ms a call
    VERSION = metadata.version("trading-engine")
except metadata.PackageNotFoundError:
    VERSION = "source"


def engine_from_config(cfg: cfgmod.Config) -> Engine:
    """A fresh matching engine with the config's capacities, symbols and accounts (the server's,
    and the replay tool's: the journal holds commands, not this set-up)."""
    e = cfg.engine
    eng = Engine(max_orders=e.max_orders, max_accounts=e.max_accounts, max_symbols=e.max_symbols,
                 max_levels=e.max_levels, max_level_slots=e.max_level_slots)
    for s in cfg.symbols:
        eng.add_symbol(s.id, tick_size=s.tick_size, lot_size=s.lot_size, max_price=s.max_price, max_qty=s.max_qty)
    for a in cfg.accounts:
        eng.add_account(a.id, stp_group=a.stp_group)
    if cfg.risk.enabled:
        r = Risk(e.max_accounts, e.max_symbols, max_strategies=cfg.risk.max_strategies,
                 cash_decimals=cfg.risk.cash_decimals)
        for s in cfg.symbols:
            r.define_symbol(s.id, s.price_decimals, s.qty_decimals, s.multiplier)
        eng.attach_risk(r)
    g = cfg.algos
    if g.enabled:                         # execution algorithms (engine/ALGOS.md)
        Algos(max_parents=g.max_parents, max_accounts=e.max_accounts, max_symbols=e.max_symbols,
              max_slices=g.max_slices, seed=g.seed, default_slices=g.default_slices,
              max_duration_ms=g.max_duration_ms, bucket_ms=g.volume_bucket_ms,
              profile=g.vwap_profile or None).attach(eng)
    return eng


class Account:
    __slots__ = ("id", "name", "key", "seqs", "ring", "ring_reports", "sessions", "delivered")

    def __init__(self, id, name, key, seqs):
        self.id, self.name, self.key = id, name, key
        self.seqs = seqs              # the server's next-sequence array (gateway.Hot.encode advances it)
        self.ring = deque()           # (first seq, bytes of consecutive reports), oldest first
        self.ring_reports = 0
        self.sessions = set()
        # the next seq after the last report delivered (committed, appended to the ring): next_seq
        # runs ahead of it while a batch is applied but not yet committed
        self.delivered = int(seqs[id])

    @property
    def next_seq(self):
        return int(self.seqs[self.id])

    def append(self, first_seq, chunk, cap):
        self.ring.append((first_seq, chunk))
        self.ring_reports += len(chunk) // REPORT_SIZE
        self.delivered = first_seq + len(chunk) // REPORT_SIZE
        while self.ring_reports - len(self.ring[0][1]) // REPORT_SIZE >= cap:
            self.ring_reports -= len(self.ring.popleft()[1]) // REPORT_SIZE

    def has(self, seq):
        """True if the ring still holds report `seq` (or it is not delivered yet)."""
        return seq >= (self.ring[0][0] if self.ring else self.delivered)

    def replay_from(self, seq):
        """Bytes of every kept report with sequence >= seq (those older than the ring are gone)."""
        parts = []
        for first, chunk in self.ring:
            last = first + len(chunk) // REPORT_SIZE - 1
            if last < seq:
                continue
            parts.append(chunk[max(0, seq - first) * REPORT_SIZE:])
        return b"".join(parts)


class SeqIndex:
    """Where each account's report sequence stood in the journal, sparsely: rows of
    (first command seq of a batch, every account's next report seq before that batch), one at
    least `every` commands after the previous. Gap replay older than an account's ring starts at
    the last row whose next seq for that account is <= the one asked for, and re-encodes the
    journaled events from there (the numbering of an account's reports depends only on its own
    events, so one counter suffices). Bounded: when `cap` rows are full every other row is
    dropped and `every` doubles. Kept in snapshots, so it survives a restart from one."""

    def __init__(self, accounts, every=1 << 16, cap=256):
        self.rows = np.zeros((cap, 1 + accounts), dtype=np.int64)
        self.n = 0
        self.every = every
        self.last = -every

    def note(self, cmd_seq, next_seq):
        if cmd_seq - self.last < self.every:
            return
        if self.n == len(self.rows):
            kept = self.rows[0:self.n:2].copy()
            self.n = len(kept)
            self.rows[:self.n] = kept
            self.every *= 2
        self.rows[self.n, 0] = cmd_seq
        self.rows[self.n, 1:] = next_seq
        self.n += 1
        self.last = cmd_seq

    def forget_after(self, cmd_seq):
        """Drop the rows of batches after cmd_seq (noted when they were sealed; never committed)."""
        self.n = int(np.searchsorted(self.rows[:self.n, 0], cmd_seq, side="right"))
        self.last = int(self.rows[self.n - 1, 0]) if self.n else -self.every

    def find(self, account, seq):
        """(command seq to read the journal from, the account's next report seq there)."""
        col = self.rows[:self.n, 1 + account]
        i = max(0, int(np.searchsorted(col, seq, side="right")) - 1)
        return int(self.rows[i, 0]), int(col[i])

    def export(self, state):
        state["server.seq_index"] = self.rows[:self.n]
        state["server.seq_index_every"] = np.array([self.every, self.last], dtype=np.int64)

    def load(self, state):
        rows = state.get("server.seq_index")
        if rows is None or rows.shape[1] != self.rows.shape[1] or len(rows) > len(self.rows):
            return False
        self.n = len(rows)
        self.rows[:self.n] = rows
        self.every, self.last = (int(x) for x in state["server.seq_index_every"])
        return True


class Server:
    def __init__(self, cfg: cfgmod.Config):
        self.cfg = cfg
        self.journal = None
        self.snapshot_dir = os.path.join(cfg.journal.path, "snapshots")
        self.snapshot_child = None
        self.last_snapshot_seq = 0        # of the newest snapshot written (or loaded)
        self.snapshot_tried_seq = 0       # of the newest one tried: the periodic trigger counts from it
        self.snapshots_skipped = 0        # not written for want of disk space (te_snapshots_skipped)
        self.snapshots_failed = 0         # not written for another error (te_snapshots_failed)
        if cfg.journal.durability != "none":
            # the writer lock comes first: a second server stops here, before it reads anything
            # (the journal directory's added_accounts.json included)
            durability = "sync" if cfg.journal.durability == "replicated" else cfg.journal.durability
            self.journal = Journal(cfg.journal.path, durability, cfg.journal.map_size,
                                   key=cfgmod.journal_key(cfg.journal))
            os.makedirs(self.snapshot_dir, exist_ok=True)
        e = cfg.engine
        self.engine = engine_from_config(cfg)
        self.accounts: dict[int, Account] = {}
        self.next_seq = np.ones(e.max_accounts, dtype=np.int64)     # per account: next report sequence
        self.seq_index = SeqIndex(e.max_accounts, every=cfg.server.replay_index_every)
        for a in cfg.accounts:
            if a.demo_secret is not None:
                log.warning("account %s uses a demo secret from the config: demo only", a.name)
            self.accounts[a.id] = Account(a.id, a.name, cfgmod.signing_key(cfgmod.account_secret(a)), self.next_seq)
        for a in cfg.admins:
            if (cfgmod.admin_password(a) or ("", False))[1]:
                log.warning("admin %s uses the demo password from the config (%s is not set): demo only",
                            a.name, a.password_env)
        self.added_accounts = adminmod.AddedAccounts(self, Account)   # added at run time (engine/admin.py)
        self.config_limits = {}           # (scope, target, kind) -> value the config last journaled (reconcile)
        self.symbol_entries = np.zeros(len(cfg.symbols), dtype=wire.SYMBOL_ENTRY.dtype)
        for i, s in enumerate(cfg.symbols):
            self.symbol_entries[i] = (s.id, 1, s.price_decimals, s.qty_decimals, 0, s.name.encode().ljust(16, b"\0"),
                                      s.tick_size, s.lot_size, s.max_price, s.max_qty)
        self.feeds = feedsmod.Feeds(self)          # market data (engine/feeds.py)
        self.risk_queries = riskqueries.RiskQueries(self)   # risk metrics, VaR, stress (engine/riskqueries.py)
        self.tls = None                            # the engine/tls.py Listener when TLS is configured
        self.recovery = {}
        self.hot = gateway.Hot(self.engine, self.next_seq, BATCH_CAP, self.journal is not None)
        # group commit off the loop: one thread, so commits run one at a time and in order
        self.committer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal-commit") \
            if self.journal is not None else None
        if self.committer is not None:
            self.committer.submit(_raise_commit_thread_priority)
            # When a commit returns, the commit thread needs the GIL back from a busy loop thread:
            # it waits up to the switch interval (5 ms by default; measured: a commit went from
            # 0.4 to 11 ms). The loop thread gives it up at this interval only while it is waited for.
            sys.setswitchinterval(COMMIT_SWITCH_INTERVAL)
        self.inflight = None              # (future, report groups, the batch's commands bytes, market data)
        self.open_out = []                # groups of the open batch, delivered after its commit
        self.failed_held = None           # after a failed commit, until the rebuild: replies held (see hold)
        self.at_dispatch = []             # connections whose market-data request waits for the open batch's seal
        self.snapshotting = False
        self.last_snapshot_time = None    # wall time of the newest snapshot written or loaded
        self.conns: set[Connection] = set()
        self.pending_logons = 0
        self.pending_by_address: dict[str, dict] = {}   # peer address -> its connections not logged on, oldest first
        self.next_session = 1
        self.auth = authmod.Auth(cfg, helper_setup)   # lockouts, last logon per account (engine/auth.py)
        self.journal_ok = True
        self.journal_error = None         # why the journal is unavailable (health, status)
        self.rebuilding = False           # after a failed commit, until the engine is back at the journal's state
        self.ready = False
        self.batches = 0
        self.loop = None
        self.tcp_server = None
        self.stopping = False
        # replication (engine/replication.py, engine/SCALING.md): set up by _serve when configured
        self.repl = None
        self.role = "primary"             # or "standby" (following the stream), "replica" (reads only), "fenced"
        self.fenced = None                # why this node acknowledges nothing more (lost its lease)
        self.state_hash_due = 0           # batches until the next state hash shipped
        self.renewer = None               # the leader's lease renewal (a future on the replication loop)

    @property
    def engine(self):
        return self._engine

    @engine.setter
    def engine(self, eng):
        """The engine is replaced when it is rebuilt from the journal: the hot path follows."""
        self._engine = eng
        if getattr(self, "hot", None) is not None:
            self.hot.bind(eng)

    @property
    def next_cmd_seq(self):
        return self.hot.next_cmd_seq

    @next_cmd_seq.setter
    def next_cmd_seq(self, seq):
        self.hot.next_cmd_seq = seq

    @property
    def bytes_in(self):
        return self.hot.bytes_in

    @property
    def pending(self):
        """The open batch's COMMAND array (commands [0, n_pending) are applied, not yet committed)."""
        return self.hot.pending

    @property
    def n_pending(self):
        return self.hot.n_pending

    def apply_written(self, n):
        """Apply the commands a tool or test wrote into pending[n_pending:n] (as submit() does one)."""
        groups = self.hot.apply_written(n)
        if groups:
            self.output(groups)
        self.input_done()

    # -- recovery --
    async def recover(self):
        """Rebuild state: the newest intact snapshot, then the journal after it, replayed
        through the same engine code (events must match the journaled ones byte for byte).
        Reports are re-encoded as they were live (per-account sequence, ring, index), not sent.
        Yields to the loop between batches so health probes answer (not ready) meanwhile."""
        if self.journal is None:
            return 0
        t = time.perf_counter()
        from_seq, anchor = self._restore_snapshot(self.engine, restore_server=True)
        n = await self._replay(self.engine, from_seq, anchor, known=None)
        self.next_cmd_seq = self.journal.last_seq + 1
        self.seq_index.note(self.next_cmd_seq, self.next_seq)
        self.recovery = {"snapshot_seq": from_seq - 1, "replayed_commands": n,
                         "seconds": round(time.perf_counter() - t, 3)}
        log.info("recovered: %d commands replayed from the journal in %.3f s, next seq %d, state_hash %#018x",
                 n, time.perf_counter() - t, self.next_cmd_seq, self.engine.state_hash())
        return n

    def _restore_snapshot(self, eng, restore_server):
        """Load the newest intact snapshot into `eng` (and, at start-up, the server's report
        sequences and index); return (first seq to replay, digest of the journal record before it
        or None when the chain must be checked from the journal's start)."""
        found = snapshot.load_latest(self.snapshot_dir,
                                     on_bad=lambda path, e: log.error("skipping damaged snapshot %s: %s", path, e))
        if found is None:
            if not restore_server:
                self._reset_trade_rings({})
            return 1, None
        path, last_seq, state, _ = found
        if last_seq > self.journal.last_seq:
            raise RuntimeError(f"snapshot {path} is at seq {last_seq} but the journal ends at "
                               f"{self.journal.last_seq}: the journal lost acknowledged events")
        eng.import_state(state)
        if not restore_server:            # a rebuild: the trade rings as the snapshot has them
            self._reset_trade_rings(state)
        if restore_server:
            self.feeds.md.import_state(state)
            self.next_seq[:] = state["server.next_seq"]
            self.last_snapshot_seq = self.snapshot_tried_seq = last_seq
            self.last_snapshot_time = os.path.getmtime(path)
            for acct in self.accounts.values():
                acct.delivered = acct.next_seq
            self._load_config_limits(state)
            if not self.seq_index.load(state):
                self.seq_index.note(last_seq + 1, self.next_seq)
            log.info("loaded snapshot %s (seq %d)", os.path.basename(path), last_seq)
        digest = state.get("journal.digest")
        return last_seq + 1, (bytes(digest) if digest is not None and last_seq else None)

    def _reset_trade_rings(self, state):
        md = self.feeds.md
        if not md.import_state(state):
            md.trades_arr[...] = 0
            md.total_arr[...] = 0
        self.feeds.last_depth.clear()
        md.top_arr[...] = 0           # the last top encoded may belong to a batch that never committed

    async def _replay(self, eng, from_seq, anchor, known):
        """Feed the journal from from_seq through `eng`, checking its events against the journaled
        ones. known=None (start-up): each batch's reports are encoded as they were live, unsent.
        known=SEQ (rebuild after a failed commit): batches up to SEQ were acknowledged already;
        one after it is a commit that did land although it reported failure, so `eng` becomes
        the engine and that batch's reports are delivered."""
        n = 0
        for cmds, events in self.journal.batches(from_seq, anchor=anchor):
            eng.feed(np.ascontiguousarray(cmds))
            if eng.events_view().tobytes() != events.tobytes():
                raise RuntimeError(f"replay diverged from the journal at seq {int(cmds['seq'][0])}")
            first = int(cmds["seq"][0])
            self._note_config_limits(cmds)
            if known is None or first > known:
                self.engine = eng                   # (Hot follows: see the engine property)
                self.seq_index.note(first, self.next_seq)
                # trade rings; in a rebuild also the market data of the batch that landed
                self.feeds.on_batch(np.ascontiguousarray(cmds), live=known is not None)
                groups = self.hot.encode()          # advances the sequences, refills the replay rings
                self.hot.discard()
                if groups:
                    self._deliver(groups, send=known is not None)
            else:
                # acknowledged before; its trades go back into the rings, which a rebuild resets to the
                # snapshot's (they were filled when batches were sealed, before their commits)
                self.feeds.md.collect(eng, np.ascontiguousarray(cmds))
                eng.clear_events()
            n += len(cmds)
            self.batches += 1
            if self.batches % 64 == 0:
                await asyncio.sleep(0)
        return n

    def reconcile(self):
        """Bring the risk set-up the config asks for into the journaled state, as journaled
        commands (operator 0 = the config), before trading opens: every limit the config names
        at its value, a mark from reference_price for each symbol without one, and on the very
        first start the accounts' initial deposits. Replay never reads the config: it replays
        these commands.

        A config limit is journaled when the config's value differs from the one the config last
        journaled (self.config_limits, from the journal and snapshots), so an operator's run-time
        set_limit survives a restart until the config itself changes that limit; a limit the
        config never journaled is journaled when it differs from the state."""
        risk = self.engine.risk
        if risk is None or not self.journal_ok:
            return 0
        cfg = self.cfg
        first_start = self.next_cmd_seq == 1      # (submit() applies at once: decide before submitting)
        have = {(scope, target, kind): value for scope, target, kind, value in risk.limits()}
        n = 0
        for (scope, target, kind), value in sorted(cfgmod.risk_limits(cfg).items()):
            last = self.config_limits.get((scope, target, kind))
            if (last if last is not None else have.get((scope, target, kind))) != value:
                self.config_limits[(scope, target, kind)] = value
                field = SET_LIMIT_TARGET.get(scope)
                self.submit(dict(kind=CommandKind.SET_LIMIT, side=scope, order_type=kind, qty=value,
                                 **({field: target} if field else {})))
                n += 1
        kyc = KycState[cfg.risk.kyc_default.upper()]
        if risk.kyc_default() != kyc:             # the config owns the default KYC state (RISK.md "KYC")
            self.submit(dict(kind=CommandKind.SET_KYC, account=0, side=kyc))
            n += 1
        for s in cfg.symbols:
            if s.reference_price is not None and not risk.mark_price(s.id):
                self.submit(dict(kind=CommandKind.MARK_PRICE, symbol=s.id,
                                 price=to_units(s.reference_price, s.price_decimals)))
                n += 1
        if first_start:
            for a in cfg.accounts:
                if a.initial_deposit:
                    self.submit(dict(kind=CommandKind.DEPOSIT, account=a.id,
                                     qty=to_units(a.initial_deposit, cfg.risk.cash_decimals)))
                    n += 1
        self.flush()
        if n:
            log.info("risk set-up from the config: %d commands journaled", n)
        return n

    def _note_config_limits(self, cmds):
        """Remember the limits the config journaled (SET_LIMIT with operator 0), for reconcile."""
        mine = cmds[(cmds["kind"] == CommandKind.SET_LIMIT) & (cmds["operator"] == 0)]
        for c in mine:
            scope = int(c["side"])
            target = int(c[SET_LIMIT_TARGET[scope]]) if scope in SET_LIMIT_TARGET else 0
            key = (scope, target, int(c["order_type"]))
            if int(c["flags"]) & 1:
                self.config_limits.pop(key, None)
            else:
                self.config_limits[key] = int(c["qty"])

    def _load_config_limits(self, state):
        rows = state.get("server.config_limits")
        self.config_limits = {} if rows is None else {(int(a), int(b), int(c)): int(v) for a, b, c, v in rows}

    def status(self) -> dict:
        """Counters for /health/detailed and the admin `status` action."""
        return {
            "version": VERSION,
            "sessions": sum(1 for c in self.conns if c.account is not None),
            "pending_logons": self.pending_logons,
            "journal": {"durability": self.cfg.journal.durability, "writable": self.journal_ok,
                        "error": self.journal_error, "rebuilding": self.rebuilding,
                        "last_seq": self.journal.last_seq if self.journal else 0},
            "snapshot": {"last_seq": self.last_snapshot_seq, "skipped": self.snapshots_skipped,
                         "failed": self.snapshots_failed},
            "engine": {"open_orders": self.engine.live_orders, "orders_accepted": self.engine.next_order_id - 1,
                       "trades": self.engine.next_trade_id - 1, "commands": self.next_cmd_seq - 1},
            "halted_symbols": [s.name for s in self.cfg.symbols
                               if self.engine.symbol_state(s.id) == SymbolState.HALTED],
            "risk": self.risk_status(),
            "recovery": self.recovery,
            "market_data": self.feeds.status(),
            **({"replication": dict(self.repl.status(), role=self.role,
                                    state_hash=f"{self.engine.state_hash():#018x}")}
               if self.repl is not None else {}),
        }

    def risk_status(self):
        r = self.engine.risk
        if r is None:
            return {"enabled": False}
        states = r.acct_cols["state"]
        accounts = sorted(self.accounts.values(), key=lambda a: a.id)     # the config's and those added
        return {"enabled": True, "global_kill_switch": bool(r.kill_all), "error_breaker_tripped": bool(r.breaker),
                "breaker_halted_symbols": [s.name for s in self.cfg.symbols if r.breaker_state(s.id)[0]],
                "killed_accounts": [a.name for a in accounts if r.acct_cols["kill"][a.id]],
                "reject_rate_locked_accounts": [a.name for a in accounts      # engine/RISK.md "Circuit breakers"
                                                if r.acct_cols["lock_until"][a.id] > time.time_ns()],
                "liquidating_accounts": [a.name for a in accounts if states[a.id] == AccountState.LIQUIDATING],
                "suspended_or_reduce_only": {a.name: AccountState(int(states[a.id])).name.lower()
                                             for a in accounts
                                             if states[a.id] in (AccountState.SUSPENDED, AccountState.REDUCE_ONLY)}}

    def snapshot(self, fork=True):
        """Write the state at the last flushed command: forked (matching pauses only for fork())
        or, at shutdown, in this process. Never while the journal is down (the engine may hold a
        batch it refused). A snapshot the disk has no room for is skipped (engine/snapshot.py):
        trading goes on, recovery replays more of the journal."""
        if self.journal is None or self.hot.n_pending or self.inflight or self.snapshot_child is not None \
                or not self.journal_ok or self.rebuilding:
            return
        last = self.next_cmd_seq - 1
        if last == self.last_snapshot_seq:
            return
        self.snapshot_tried_seq = last
        t = time.perf_counter()
        state = self.engine.export_state()
        state["server.next_seq"] = self.next_seq
        state["journal.digest"] = np.frombuffer(self.journal.last_digest, dtype=np.uint8)
        self.seq_index.export(state)
        if self.config_limits:        # (snapshot arrays are never empty)
            state["server.config_limits"] = np.array([(*k, v) for k, v in sorted(self.config_limits.items())],
                                                     dtype=np.int64)
        state.update(self.feeds.md.export_state())
        j = self.cfg.journal
        if fork:
            self.snapshot_child = snapshot.fork_write(self.snapshot_dir, state, last,
                                                      on_child=self._snapshot_child_setup,
                                                      keep=j.snapshots_keep, min_free=j.snapshot_min_free_bytes)
            self.snapshot_child_seq = last
            self.snapshot_pause_s = time.perf_counter() - t    # the loop stood still this long
            log.info("snapshot at seq %d: writer forked, loop paused %.3f ms", last, self.snapshot_pause_s * 1e3)
            return
        try:
            snapshot.write(self.snapshot_dir, state, last, keep=j.snapshots_keep, min_free=j.snapshot_min_free_bytes)
            snapshot.prune(self.snapshot_dir, j.snapshots_keep)
        except snapshot.SnapshotSkipped as e:
            self.snapshots_skipped += 1
            log.warning("%s; trading goes on (recovery replays the journal from an older snapshot)", e)
            return
        except OSError as e:
            self.snapshots_failed += 1
            log.error("snapshot at seq %d failed, trading goes on: %s", last, e)
            return
        self.snapshot_written(last)

    def _snapshot_child_setup(self):
        helper_setup(report=False)
        self.journal.drop_inherited()         # a restart after kill -9 must not wait for this child

    def snapshot_written(self, last):
        self.last_snapshot_seq = last
        self.last_snapshot_time = time.time()

    def reap_snapshot(self, block=False):
        if self.snapshot_child is None:
            return
        pid, status = os.waitpid(self.snapshot_child, 0 if block else os.WNOHANG)
        if pid:
            self.snapshot_child = None
            code = os.waitstatus_to_exitcode(status)
            if code == snapshot.SKIPPED_EXIT:
                self.snapshots_skipped += 1
                log.warning("snapshot at seq %d skipped: too little free disk (journal.snapshot_min_free_bytes "
                            "= %d must stay free); trading goes on", self.snapshot_child_seq,
                            self.cfg.journal.snapshot_min_free_bytes)
            elif code != 0:
                self.snapshots_failed += 1
                log.error("snapshot writer failed (exit %d), trading goes on", code)
            else:
                self.snapshot_written(self.snapshot_child_seq)
                try:
                    snapshot.prune(self.snapshot_dir, self.cfg.journal.snapshots_keep)
                except OSError as e:
                    log.error("pruning old snapshots failed: %s", e)

    async def replay_from_journal(self, conn, acct, want):
        """Gap replay older than the ring: re-encode the account's reports from the journaled
        events (gateway.encode_account_reports: the live encoder's bytes and numbering), from
        the seq index's nearest row, in chunks of records each read in its own short read
        transaction, yielding to the loop between chunks and while the client's socket drains.
        The ring takes over (and the session joins its account's live stream) in the same loop
        step as the journal catches up with it, so no report is missed or doubled."""
        cmd_seq, seq = self.seq_index.find(acct.id, want)
        out = np.zeros(1 << 16, dtype=np.uint8)
        limit = self.cfg.server.output_buffer_bytes // 4
        records = 0
        try:
            for cmds, events in self.journal.read_from(cmd_seq):
                if conn.closed:
                    return
                if acct.has(seq):
                    break
                raw = events.view(np.uint8)
                n = gateway.encode_account_reports(raw, acct.id, seq, out)
                if n < 0:
                    out = np.zeros(-n, dtype=np.uint8)
                    n = gateway.encode_account_reports(raw, acct.id, seq, out)
                if seq + n > want:
                    data = out[max(0, want - seq) * REPORT_SIZE:n * REPORT_SIZE].tobytes()
                    for i in range(0, len(data), limit):
                        while conn.transport.get_write_buffer_size() > limit and not conn.closed:
                            await asyncio.sleep(0.002)
                        conn.write(data[i:i + limit])
                seq += n
                records += 1
                if records % 64 == 0:
                    await asyncio.sleep(0)
        except (JournalError, OSError, ValueError) as e:
            log.error("gap replay for account %s stopped: %s", acct.name, e)
            conn.close(None)
            return
        if conn.closed:
            return
        if not acct.has(seq):            # cannot happen: every sent report was journaled first
            log.error("gap replay for account %s ended at seq %d, ring starts later", acct.name, seq)
            conn.close(None)
            return
        conn.write(acct.replay_from(seq))
        acct.sessions.add(conn)
        log.info("gap replay for account %s: reports %d..%d from the journal", acct.name, want, seq - 1)

    # -- the batch path --
    def input_done(self):
        """After a read (or a command from Python): without a journal the open batch is
        done (its reports are written); with one, start its commit unless one is in flight."""
        if self.committer is None:
            if self.hot.n_pending:
                self.feeds.on_batch(self.hot.pending[:self.hot.n_pending])
            self.hot.done()
        elif self.fenced is not None:
            self.hot.discard()            # never committed nor acknowledged (see fence)
            self.open_out = []
        elif self.inflight is None and self.hot.n_pending:
            self.dispatch()

    def output(self, groups):
        """Reports of applied commands: written now without a journal, else after their commit."""
        if self.committer is None:
            self._deliver(groups, send=True)
        else:
            self.open_out.extend(groups)

    def dispatch(self):
        """Seal the open batch and hand it to the commit thread (none may be in flight). Its
        market data is encoded now (the book is exactly after it) and published after the commit."""
        n = self.hot.n_pending
        if n == 0:
            return
        md = self.feeds.encode_batch(self.hot.pending[:n])
        _, cmds, events = self.hot.seal()
        # every account's next report seq before the batch that starts now (gap replay's index)
        self.seq_index.note(self.next_cmd_seq, self.next_seq)
        out, self.open_out = self.open_out, []
        state = None                      # the state hash shipped with this batch (the engine is just after it)
        if self.repl is not None and self.cfg.replication.state_hash_every:
            self.state_hash_due -= 1
            if self.state_hash_due <= 0:
                self.state_hash_due = self.cfg.replication.state_hash_every
                state = self.engine.state_hash()
        fut = self.committer.submit(self._commit, cmds, events, state)
        self.inflight = (fut, out, cmds, md)
        fut.add_done_callback(self._commit_returned)
        if self.at_dispatch:              # the rings and the book are exactly after the sealed batch now
            waiting, self.at_dispatch = self.at_dispatch, []
            for conn in waiting:
                conn.answer_waiting()

    def _commit(self, cmds, events, state=None):
        """On the commit thread: one LMDB transaction (fsync'd with `sync`), then, when replicating,
        the record's publish (awaited with `replicated`: replication.Fenced if it fails); its
        duration in ns."""
        t = time.perf_counter_ns()
        c = np.frombuffer(cmds, dtype=COMMAND.dtype)
        value = self.journal.append(c, np.frombuffer(events, dtype=EVENT.dtype))
        if self.repl is not None:
            self.repl.ship(value, int(c["seq"][0]), int(c["seq"][-1]), state)
        return time.perf_counter_ns() - t

    def _commit_returned(self, fut):
        if self.loop is None:             # no event loop (a tool): flush() waits for the commit itself
            return
        try:
            self.loop.call_soon_threadsafe(self.committed, fut)
        except RuntimeError:              # the loop is closed: stop() flushed synchronously
            pass

    def committed(self, fut):
        """On the loop: a commit returned. Start the next one, then deliver this batch's reports."""
        if self.inflight is None or self.inflight[0] is not fut:
            return                        # already handled by flush()
        _, out, cmds, md = self.inflight
        self.inflight = None
        try:
            self.hot.commit.observe(fut.result())
        except replmod.Fenced as e:       # committed here but not replicated: nothing is acknowledged
            self.fence(str(e))
            return
        except Exception as e:            # JournalUnavailable, or a journal bug: nothing is acknowledged
            self.journal_failed(cmds, out, e)
            return
        self.batches += 1
        if self.hot.n_pending:
            self.dispatch()               # what accumulated meanwhile becomes the next single commit
        self._deliver(out, send=True)
        self.feeds.publish(md)
        self.hot.acked(cmds)
        every = self.cfg.journal.snapshot_every
        if every and not self.snapshotting and self.next_cmd_seq - 1 - self.snapshot_tried_seq >= every:
            self.snapshotting = True
            try:
                self.flush()
                self.snapshot(fork=True)
            finally:
                self.snapshotting = False

    def flush(self):
        """Commit and deliver everything outstanding, synchronously (before a session or
        query frame, an admin action's reply, a snapshot, shutdown)."""
        if self.committer is None:
            return
        while self.journal_ok and self.fenced is None:
            if self.inflight is not None:
                fut = self.inflight[0]
                concurrent.futures.wait([fut])
                self.committed(fut)
            elif self.hot.n_pending:
                self.dispatch()
            else:
                return

    # -- connections not logged on yet --
    def admit(self, conn):
        """Count a new connection as pending logon, or refuse it (False): at most
        max_pending_logons_per_address per source address; when all max_pending_logons are taken,
        the address holding most (more than this one would) gives up its oldest connection, so
        sockets from a few addresses cannot keep every other address from logging on."""
        s = self.cfg.server
        mine = self.pending_by_address.get(conn.peer)
        n = len(mine) if mine else 0
        if n >= s.max_pending_logons_per_address:
            return False
        if self.pending_logons >= s.max_pending_logons:
            most = max(self.pending_by_address.values(), key=len, default=())
            if len(most) <= n + 1:
                return False
            next(iter(most)).protocol_error(Reject.TOO_MANY_CONNECTIONS, 0)    # (unpends it)
        if mine is None:
            mine = self.pending_by_address[conn.peer] = {}
        mine[conn] = None
        self.pending_logons += 1
        conn.logon_pending = True
        return True

    def unpend(self, conn):
        """conn logged on or closed: its pending-logon slot is free."""
        if not conn.logon_pending:
            return
        conn.logon_pending = False
        self.pending_logons -= 1
        mine = self.pending_by_address.get(conn.peer)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self.pending_by_address[conn.peer]

    def logon_timeout(self):
        """How long a connection may stay without logging on: shorter while half the slots are taken."""
        s = self.cfg.server
        return s.logon_timeout_busy_s if 2 * self.pending_logons >= s.max_pending_logons else s.logon_timeout_s

    def hold(self, conn, kind, payload):
        """Hold a reply to one of conn's frames behind the reports of every command applied so
        far (they are in the open batch or the one in flight): it is written when their commit
        returns, between the reports before it and those after it. False when nothing is
        outstanding (the caller writes it now). After a failed commit, until the rebuild is done,
        replies wait for the refusals of the commands before them (see refuse)."""
        if self.failed_held is not None:
            self.failed_held.append((HELD, conn, (kind, payload, 1 << 64)))
            return True
        if self.committer is None:
            return False
        if self.hot.n_pending:
            out = self.open_out
        elif self.inflight is not None:
            out = self.inflight[1]
        else:
            return False
        out.append((HELD, conn, (kind, payload, self.next_cmd_seq)))
        return True

    def after_commit(self) -> asyncio.Future:
        """A future that becomes True when every command applied so far is committed (its reports
        delivered before it), False when that commit failed or this node was fenced: how an admin
        action waits for its command without blocking the loop (flush() would: every session's
        orders would wait out the fsync, and the risk worker sends one every cycle)."""
        fut = self.loop.create_future()

        def done(ok):
            if not fut.done():
                fut.set_result(ok)
        if not self.hold(None, DONE, done):
            done(True)                    # nothing outstanding (or no journal): already true
        return fut

    @staticmethod
    def _release(conn, item, ok=True):
        """Write a held reply (ok=False: its batch's commit failed, so a query answer, which may
        show what was not committed, becomes an empty JOURNAL_UNAVAILABLE response)."""
        kind, payload, _ = item
        if kind == CLOSE:
            conn.close(payload)
        elif kind == MD_START:
            conn.server.feeds.started(conn, payload)
        elif kind == DONE:
            payload(ok)
        elif kind == QUERY:
            data, t, rid = payload
            conn.write(data if ok else Connection.list_frames(t, rid, [], Reject.JOURNAL_UNAVAILABLE))
        else:
            conn.write(payload)

    def _deliver(self, groups, send):
        """Reports and the replies held between them, in order (see hold)."""
        start = 0
        for i, g in enumerate(groups):
            if g[0] == HELD:
                if i > start:
                    self._deliver_reports(groups[start:i], send)
                start = i + 1
                if send:
                    self._release(g[1], g[2])
        if start == 0:
            self._deliver_reports(groups, send)
        elif start < len(groups):
            self._deliver_reports(groups[start:], send)

    def _deliver_reports(self, groups, send):
        """Append reports to the accounts' replay rings and write them to their sessions
        (one write per connection: an account's chunks of one batch are joined)."""
        ring = self.cfg.server.replay_ring
        if len(groups) > 1:
            merged = {}
            for acct_id, first_seq, data in groups:
                m = merged.get(acct_id)
                if m is None:
                    merged[acct_id] = [first_seq, [data]]
                else:
                    m[1].append(data)
            groups = [(a, first, parts[0] if len(parts) == 1 else b"".join(parts))
                      for a, (first, parts) in merged.items()]
        for acct_id, first_seq, data in groups:
            acct = self.accounts.get(acct_id)
            if acct is None:
                continue
            acct.append(first_seq, data, ring)
            if send:
                for conn in tuple(acct.sessions):     # (a write may close a slow consumer)
                    conn.write(data)

    # -- journal failure: halt, rebuild, probe, resume --
    def journal_failed(self, cmds, out, exc):
        """A commit failed (disk full, I/O error). Nothing of the batch is acknowledged, nor of
        the open batch applied after it, but the engine has applied both: state changes stop
        (orders get JOURNAL_UNAVAILABLE, readiness goes false), every account's report sequence
        goes back to where the failed batch began, the engine is rebuilt from snapshot + journal,
        i.e. to exactly what the journal holds, and both batches' commands are refused; then the
        timer probes the disk and trading resumes once a write and fdatasync succeed again."""
        log.error("journal unavailable, refusing state changes until it can be written again: %s", exc,
                  extra={"event": "journal_unavailable"})
        self.journal_ok = False
        self.journal_error = str(exc)
        failed = np.concatenate([np.frombuffer(cmds, dtype=COMMAND.dtype),
                                 self.hot.pending[:self.hot.n_pending].copy()])
        known = int(failed["seq"][0]) - 1            # the last acknowledged command
        for acct_id, first_seq, _ in reversed(out + self.open_out):
            if acct_id != HELD:
                self.next_seq[acct_id] = first_seq   # the earliest unacknowledged report of each account
        self.failed_held = [g for g in out + self.open_out if g[0] == HELD]
        self.open_out = []
        waiting, self.at_dispatch = self.at_dispatch, []     # their open batch is gone: answered anew
        for conn in waiting:
            self.loop.call_soon(conn.resume_walk)
        self.hot.discard()
        self.next_cmd_seq = known + 1
        self.seq_index.forget_after(known + 1)
        self.rebuilding = True
        self.loop.create_task(self.rebuild(failed, known))

    async def rebuild(self, failed, known):
        shipped = known
        while True:
            try:
                self.journal.reopen()
                if self.repl is not None and self.journal.last_seq > shipped:
                    # a commit that reported failure landed after all: it was never shipped, and its
                    # reports go out below (in _replay), so it is published first
                    for first, last, value in _records_after(self.journal, shipped, None):
                        await self.repl.run(self.repl._ship(value, first, last, None))
                        shipped = last
                eng = engine_from_config(self.cfg)
                from_seq, anchor = self._restore_snapshot(eng, restore_server=False)
                await self._replay(eng, from_seq, anchor, known)
                break
            except replmod.Fenced as e:
                self.fence(str(e))
                return
            except Exception as e:       # the journal cannot even be read: keep refusing, try again
                log.error("rebuild from the journal failed, retrying: %s", e)
                await asyncio.sleep(self.cfg.journal.retry_interval_ms / 1000)
        self.engine = eng
        self.next_cmd_seq = self.journal.last_seq + 1
        held, self.failed_held = self.failed_held, None
        self.refuse(failed[failed["seq"] > self.journal.last_seq], held)
        self.rebuilding = False
        log.warning("engine rebuilt from the journal at seq %d; probing the disk", self.journal.last_seq)

    def refuse(self, cmds, held=()):
        """Session-level JOURNAL_UNAVAILABLE for commands that never took effect, and the replies
        held behind them (a failed commit's) in between, in wire order (see hold)."""
        by_session = {c.session_id: c for c in self.conns if c.account is not None}
        held = deque(held)
        for c in cmds:
            while held and held[0][2][2] <= int(c["seq"]):
                _, conn, item = held.popleft()
                self._release(conn, item, ok=False)
            conn = by_session.get(int(c["session"]))
            if conn is not None and (c["kind"] in (CommandKind.NEW_ORDER, CommandKind.CANCEL, CommandKind.AMEND,
                                                   CommandKind.MASS_CANCEL) or
                                     CommandKind.ALGO_NEW <= c["kind"] <= CommandKind.ALGO_AMEND):
                conn.write(conn.session_reject(int(c["kind"]), int(c["client_order_id"]), int(c["order_id"]),
                                               Reject.JOURNAL_UNAVAILABLE,
                                               **{f: int(c[f]) for f in ("symbol", "side", "price", "qty")}))
        for _, conn, item in held:
            self._release(conn, item, ok=False)
        if len(cmds):
            log.warning("refused %d commands: journal unavailable", len(cmds))

    def probe_journal(self):
        """After a rebuild: resume when the journal's disk takes a write and an fdatasync again."""
        if self.journal_ok or self.rebuilding or self.role != "primary":
            return
        try:
            self.journal.probe()
        except OSError as e:
            log.info("journal still unavailable: %s", e)
            return
        self.journal_ok = True
        self.journal_error = None
        log.warning("journal writable again: resuming at seq %d", self.next_cmd_seq, extra={"event": "journal_writable"})

    # -- replication (engine/replication.py, engine/SCALING.md) --
    def fence(self, reason):
        """This node lost its leader lease (or its publish failed): acknowledge nothing more. The
        batch in flight and the open one are dropped unacknowledged, every session gets a LOGOUT
        NOT_PRIMARY and is closed, logons are refused with NOT_PRIMARY, readiness goes false.
        The process stays up for its health and metrics; restart it as a standby."""
        if self.fenced is not None:
            return
        self.fenced = reason
        self.role = "fenced"
        self.ready = False
        self.journal_ok = False           # the hot path applies no more orders (answered NOT_PRIMARY)
        if self.repl is not None:
            self.repl.lose(reason)
        log.error("fenced, closing every session: %s", reason, extra={"event": "fenced"})
        for g in (self.inflight[1] if self.inflight is not None else []) + self.open_out:
            if g[0] == HELD and g[2][0] == DONE:
                g[2][1](False)            # an admin action waiting: not applied
        self.inflight = None
        self.open_out = []
        self.at_dispatch = []
        self.hot.discard()
        for c in list(self.conns):
            c.close(Reject.NOT_PRIMARY)

    async def apply_shipped(self, recs):
        """A standby: apply records read off the stream through this engine and journal, as
        recovery replays them (events compared byte for byte, reports encoded unsent into the
        replay rings), each checked to chain onto this journal (the previous digest, its own
        digest with this journal's key), the shipped state hashes compared; then commit them in
        one transaction. replication.Diverged when they disagree."""
        j = self.journal
        prev, end = j.last_digest, j.last_seq
        done = []
        try:
            for rec in recs:
                if rec.last <= end:       # already here (a restart reads the stream from its saved position)
                    continue
                if rec.first != end + 1:
                    raise replmod.Diverged(f"the stream's record at seq {rec.first}..{rec.last} does not follow "
                                           f"this journal's end at seq {end}")
                try:
                    cmds, events, prev = decode_record(rec.first, rec.value, prev, j.key)
                except JournalError as e:
                    raise replmod.Diverged(f"the stream's record does not chain onto this journal: {e}") from None
                cmds = np.ascontiguousarray(cmds)
                eng = self.engine
                eng.feed(cmds)
                if eng.events_view().tobytes() != events.tobytes():
                    raise replmod.Diverged(f"applying the stream diverged from the primary's events at seq {rec.first}")
                self._note_config_limits(cmds)
                self.seq_index.note(rec.first, self.next_seq)
                live = self.role == "replica"     # its sessions get their reports and market data
                self.feeds.on_batch(cmds, live=live)
                groups = self.hot.encode()    # advances the sequences, refills the replay rings
                self.hot.discard()
                if groups:
                    self._deliver(groups, send=live)
                end = rec.last
                self.next_cmd_seq = end + 1
                self.batches += 1
                done.append((rec.first, rec.last, rec.value))
                if rec.state is not None and eng.state_hash() != rec.state:
                    raise replmod.Diverged(f"state hash after seq {rec.last}: {eng.state_hash():#018x} here, "
                                           f"{rec.state:#018x} on the primary")
        finally:
            j.append_records(done)        # what was applied (up to a divergence) is journaled
        if recs:
            self.repl.stream_seq = recs[-1].stream_seq
            self.repl.applied += len(done)
            self.repl._save_pos()

    def submit(self, cmd_fields: dict):
        """Apply one command built in Python (timers, cancel on disconnect, admin); refused
        while the journal is down."""
        if self.fenced is not None:
            return
        if self.hot.full:
            self.flush()
        n = self.hot.n_pending
        c = self.hot.pending[n]
        c.fill(0)
        for k, v in cmd_fields.items():
            c[k] = v
        if not self.journal_ok:
            self.refuse(self.hot.pending[n:n + 1].copy())
            return
        groups = self.hot.apply_last()
        if groups:
            self.output(groups)
        self.input_done()

    # -- periodic work --
    async def timers(self):
        s = self.cfg.server
        hb = s.heartbeat_ms / 1000
        j = self.cfg.journal
        tick = min(hb / 2, s.expire_interval_ms / 1000, j.sync_interval_ms / 1000, j.retry_interval_ms / 1000,
                   self.cfg.risk.mark_interval_ms / 1000)
        last_expire = last_sync = last_ping = last_probe = last_mark = last_clock = 0.0
        mark_every = self.cfg.risk.mark_interval_ms / 1000
        clock_every = self.cfg.algos.clock_ms / 1000
        tick = min(tick, clock_every)
        last_roll, roll_every, rolled_volume = time.monotonic(), self.cfg.algos.volume_bucket_ms / 1000, 0
        self.watchdog = opsmod.watchdog_interval()
        if self.watchdog:
            tick = min(tick, self.watchdog / 2)
        while not self.stopping:
            await asyncio.sleep(tick)
            now = time.monotonic()
            self.reap_snapshot()
            if self.watchdog and now - last_ping >= self.watchdog:
                last_ping = now
                opsmod.notify("WATCHDOG=1")   # from the loop itself: a stuck loop stops the pings
            if self.journal_ok and j.durability == "async" and now - last_sync >= j.sync_interval_ms / 1000:
                last_sync = now
                self.committer.submit(self.journal.sync)   # async durability: on a timer, off the loop
            for c in list(self.conns):
                c.tick(now)
            if not self.journal_ok and self.journal is not None and now - last_probe >= j.retry_interval_ms / 1000:
                last_probe = now
                self.probe_journal()
            if now - last_expire >= s.expire_interval_ms / 1000 and self.journal_ok:
                last_expire = now
                due = self.engine.next_expiry_ns()
                wall = time.time_ns()
                if due and due <= wall:       # only a due GTD order makes the clock a journaled command
                    self.submit(dict(kind=CommandKind.EXPIRE, expire_ts_ns=wall))
            if now - last_mark >= mark_every and self.journal_ok and not self.rebuilding:
                last_mark = now
                wall = time.time_ns()
                if self.engine.risk_tick_due(wall):   # marks behind last trades, a cool-off over, a liquidation
                    self.submit(dict(kind=CommandKind.RISK_TICK, expire_ts_ns=wall))
            algos = self.engine.algos
            if algos is not None and now - last_clock >= clock_every and self.journal_ok and not self.rebuilding:
                # the parents' clock, journaled (engine/ALGOS.md): while any parent is live, and once per
                # volume bucket when the market traded meanwhile (the VWAP profile's buckets roll on it)
                last_clock = now
                volume = int(algos.sym_volume_arr.sum())
                if algos.active or (now - last_roll >= roll_every and volume != rolled_volume):
                    if not algos.active:
                        last_roll, rolled_volume = now, volume
                    self.submit(dict(kind=CommandKind.ALGO_CLOCK, expire_ts_ns=time.time_ns()))
            self.auth.expire()

    # -- lifecycle --
    async def start(self):
        self.loop = asyncio.get_running_loop()
        self.reconcile()
        if self.tcp_server is not None:       # a standby's listener, open already (listen)
            self.role = "primary"
            self.ready = True
            log.info("serving", extra={"event": "serving"})
            return self.tcp_server.sockets[0].getsockname()[1]
        return await self.listen()

    async def listen(self):
        """Open the trading port (a standby's early: its logons are refused with NOT_PRIMARY until
        it takes over), write the port file; ready unless a standby."""
        self.loop = asyncio.get_running_loop()
        s = self.cfg.server
        if s.tls_cert is None:
            self.tcp_server = await self.loop.create_server(lambda: Connection(self), s.host, s.port,
                                                            reuse_address=True)
        else:
            self.tcp_server = self.tls = tlsmod.Listener(self, Connection, s.host, s.port)
        port = self.tcp_server.sockets[0].getsockname()[1]
        if s.port_file:
            with open(s.port_file + ".tmp", "w") as f:
                f.write(str(port))
            os.replace(s.port_file + ".tmp", s.port_file)
        self.ready = self.role == "primary"
        log.info("listening", extra={"event": "listening", "host": s.host, "port": port})
        return port

    async def stop(self):
        """Graceful: stop accepting, flush, END_OF_SESSION to every session, close the journal."""
        self.stopping = True
        if self.tcp_server is not None:
            self.tcp_server.close()
        self.flush()
        for c in list(self.conns):
            if c.account is not None:
                c.write(wire.encode(MsgType.END_OF_SESSION, last_seq=c.account.next_seq - 1))
            c.finish()
        # until every client has what was written to it (acknowledged by its kernel: a reset can
        # no longer destroy it), at most SHUTDOWN_DRAIN_S for clients that do not read
        deadline = time.monotonic() + SHUTDOWN_DRAIN_S
        await asyncio.sleep(0.01)
        while any(c.unsent() for c in self.conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for c in list(self.conns):
            c.close(None)
        if self.journal is None:
            return
        try:                                  # nothing here may stop the journal being closed
            self.reap_snapshot(block=True)
            self.flush()
            if self.fenced is None:           # (fenced: the engine holds commands never journaled)
                self.snapshot(fork=False)     # the next start loads it and replays nothing
        except Exception:
            log.exception("shutdown snapshot failed; the next start replays the journal instead")
        self.committer.shutdown(wait=True)
        try:
            self.journal.close()
        except OSError as e:
            log.error("closing the journal: %s", e)
        self.auth.close()


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: Server):
        self.server = server
        self.buf = bytearray(READ_BUFFER)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.stream_offset = 0
        self.transport = None
        self.account: Account | None = None
        self.session_id = 0
        self.cancel_on_disconnect = False
        self.heartbeat = server.cfg.server.heartbeat_ms / 1000
        self.last_recv = self.last_sent = self.opened = time.monotonic()
        self.closed = False
        self.finishing = False            # shutdown: our side closed after the last report; input dropped
        self.closing = False              # a close is held behind reports still to be committed: input dropped
        self.waiting = False              # a market-data request waits for the open batch's seal (Server.dispatch)
        self.peer = None
        self.logon_pending = False
        self.logon_storing = False        # a LOGON passed its checks; its timestamp is being written
        s = server.cfg.server
        # token buckets [new orders and amends, cancels, all frames], refilled and spent in Cython
        self.throttle = gateway.Throttle((s.orders_per_s, s.cancels_per_s, s.logout_per_s),
                                         (float(s.orders_burst), float(s.cancels_burst), float(s.logout_burst)),
                                         self.last_recv)

    # -- asyncio --
    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.server.cfg.server.socket_send_buffer_bytes:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.server.cfg.server.socket_send_buffer_bytes)
        self.peer = (transport.get_extra_info("peername") or ("?",))[0]
        srv = self.server
        if srv.stopping or not srv.admit(self):
            self.protocol_error(Reject.TOO_MANY_CONNECTIONS if not srv.stopping else Reject.SERVER_SHUTDOWN, 0)
            return
        srv.conns.add(self)

    def get_buffer(self, sizehint):
        if self.end == len(self.buf):          # compact: keep the unconsumed tail at the front
            tail = self.end - self.start
            self.buf[:tail] = self.buf[self.start:self.end]
            self.start, self.end = 0, tail
        return self.view[self.end:]

    def buffer_updated(self, nbytes):
        if self.finishing or self.closing:
            return                             # get_buffer's region is overwritten by the next read
        self.end += nbytes
        self.last_recv = time.monotonic()
        try:
            self.process(nbytes)
        finally:
            self.server.input_done()

    def connection_lost(self, exc):
        self.close(None)

    def pause_writing(self):                   # unsent output above md_high_water_bytes
        self.server.feeds.pause(self)

    def resume_writing(self):                  # ... and back under md_low_water_bytes
        self.server.feeds.resume(self)

    # -- input --
    def process(self, nbytes=0):
        srv = self.server
        step = srv.hot.step
        th = self.throttle
        while not self.closed and not self.closing and not self.waiting and not self.logon_storing:
            acct = self.account
            consumed, stop, mtype, reason, groups = step(
                self.buf, self.start, self.end, acct.id if acct else 0, self.session_id, acct is not None,
                srv.journal_ok, th, self.last_recv, nbytes)
            nbytes = 0
            if groups is not None:
                srv.output(groups)
            self.start += consumed
            self.stream_offset += consumed
            if stop == gateway.STOP_END:
                break
            if stop == gateway.STOP_ERROR:
                self.protocol_error(reason, mtype)
                return
            # STOP_SESSION: a session or query frame, a full batch, or the journal is down. The frame
            # is answered now; the answer waits (Server.hold) for the commit of what came before it.
            srv.input_done()
            throttled = None
            if mtype in ORDER_TYPES and srv.journal_ok:
                klass = gateway.BUDGET_NEW if mtype in (MsgType.NEW_ORDER, MsgType.AMEND) else gateway.BUDGET_CANCEL
                if th.level(gateway.BUDGET_ALL) < 1:
                    self.close_after(Reject.RATE_LIMIT_LOGOUT)  # tier 2: cancel on disconnect applies
                    return
                if th.level(klass) >= 1:
                    srv.flush()                # the batch was full: walk on into the emptied one
                    continue
                throttled = Reject.THROTTLED
            elif mtype in feedsmod.REQUESTS and srv.hot.n_pending and srv.journal_ok:
                # the trade rings and published market data stand at the last sealed batch: this
                # connection (only) waits for the open one's seal, answered there (Server.dispatch)
                self.waiting = True
                srv.at_dispatch.append(self)
                self.transport.pause_reading()
                return
            frame = self.take_frame()
            if throttled:
                body = wire.decode(frame)[0][0][1]
                self.send(self._reject_report(MsgType(mtype), body, throttled))
                continue
            if th.level(gateway.BUDGET_ALL) < 0:
                self.close_after(Reject.RATE_LIMIT_LOGOUT)
                return
            self.handle(MsgType(mtype), frame)     # a LOGON may set logon_storing: the rest waits for
                                                   # LOGON_ACCEPTED (logon_stored resumes the walk)
        if self.start == self.end:
            self.start = self.end = 0

    def take_frame(self):
        """The frame the walk stopped in front of (complete: step() saw all of it), consumed."""
        self.throttle.spend(gateway.BUDGET_ALL)
        length = int.from_bytes(self.buf[self.start:self.start + 2], "little")
        frame = bytes(self.buf[self.start:self.start + length])
        self.start += length
        self.stream_offset += length
        return frame

    def answer_waiting(self):
        """Server.dispatch, the open batch just sealed: answer the market-data request the walk
        stopped in front of, then walk on (soon: not inside dispatch)."""
        if self.closed or self.closing:
            return
        frame = self.take_frame()
        if self.throttle.level(gateway.BUDGET_ALL) < 0:
            self.close_after(Reject.RATE_LIMIT_LOGOUT)
            return
        self.handle(MsgType(frame[2]), frame)
        self.server.loop.call_soon(self.resume_walk)

    def resume_walk(self):
        self.waiting = False
        if self.closed or self.closing:
            return
        self.transport.resume_reading()
        try:
            self.process()
        finally:
            self.server.input_done()

    def handle(self, t: MsgType, frame: bytes):
        body = wire.decode(frame)[0][0][1]
        if t in ORDER_TYPES:           # only while the journal is down (or on a read replica): nothing may change state
            self.send(self._reject_report(t, body, Reject.JOURNAL_UNAVAILABLE if self.server.role == "primary"
                                          else Reject.NOT_PRIMARY))
            return
        if t in ALGO_COMMANDS:
            self.algo_command(t, body)
            return
        if t == MsgType.LOGON:
            self.logon(frame, body)
        elif t == MsgType.HEARTBEAT:
            pass
        elif t == MsgType.LOGOUT:
            self.send(wire.encode(MsgType.LOGOUT))
            self.close_after(None)
        else:
            self.query(t, body)

    def _reject_report(self, t, body, reason):
        """A session-level REJECTED (THROTTLED, JOURNAL_UNAVAILABLE): the order never reached
        the engine, so the report is not sequenced (seq 0) and nothing is journaled."""
        kind = {MsgType.NEW_ORDER: CommandKind.NEW_ORDER, MsgType.CANCEL: CommandKind.CANCEL,
                MsgType.AMEND: CommandKind.AMEND}.get(t, CommandKind.MASS_CANCEL)
        names = body.dtype.names
        sent = {f: int(body[f]) for f in ("symbol", "side", "price", "qty") if f in names}   # echoed as sent
        return self.session_reject(kind, int(body["client_order_id"]) if "client_order_id" in names else 0,
                                   int(body["order_id"]) if "order_id" in names else 0, reason, **sent)

    def session_reject(self, cmd_kind, client_order_id, order_id, reason, **sent):
        if self.account is None:
            return b""
        self.server.hot.count_reject(reason)
        return wire.encode(MsgType.REJECTED, seq=0, reason=reason, cmd_kind=cmd_kind,
                           client_order_id=client_order_id, order_id=order_id, ts_ns=time.time_ns(), **sent)

    def algo_command(self, t, body):
        """An execution-algorithm message becomes its journaled command (engine/ALGOS.md): ALGO_NEW's
        start (0 = now, the server's wall clock, journaled in the command) and end, and its parameters
        packed into the command's fields (engine/algos.pyx pack_params)."""
        srv = self.server
        kind = ALGO_COMMANDS[t]
        if not srv.journal_ok:
            self.send(self.session_reject(kind, int(body["client_order_id"]), 0, Reject.JOURNAL_UNAVAILABLE))
            return
        cmd = dict(kind=kind, account=self.account.id, session=self.session_id,
                   client_order_id=int(body["client_order_id"]))
        if t == MsgType.ALGO_NEW:
            start = int(body["start_ts_ns"]) or time.time_ns()
            end = start + int(body["duration_ms"]) * 1_000_000
            if start > I64_MAX or end > I64_MAX:
                start = end = 0                # refused INVALID_ALGO_WINDOW by the engine
            offset = int(body["offset_ticks"])
            pa, pb = algosmod.pack_params(
                slices=int(body["slices"]), randomization_bps=int(body["randomization_bps"]),
                aggressiveness_bps=int(body["aggressiveness_bps"]), participation_bps=int(body["participation_bps"]),
                offset_ticks=offset if 0 <= offset <= 0xFFFF else 0xFFFF,     # (out of range: refused)
                risk_aversion=int(body["risk_aversion"]), volatility=int(body["volatility"]),
                impact=int(body["impact"]))
            cmd.update(symbol=int(body["symbol"]), side=int(body["side"]), order_type=int(body["algo"]),
                       tif=int(body["end_action"]), qty=int(body["qty"]), price=int(body["limit_price"]),
                       stop_price=start, expire_ts_ns=end, display_qty=pa, order_id=pb,
                       strategy=int(body["strategy"]))
        else:
            cmd.update(order_id=int(body["parent_id"]), qty=int(body["qty"]), price=int(body["limit_price"]),
                       expire_ts_ns=min(int(body["end_ts_ns"]), I64_MAX))
        srv.submit(cmd)

    # -- logon --
    def logon(self, frame, body):
        """Lockouts first (per (account, address), address, account: engine/auth.py), then the
        signature, version, timestamp window, and a timestamp after the account's last accepted
        logon. That timestamp is written durably before LOGON_ACCEPTED (logon_stored); reading
        stops meanwhile, so what the client sent after its LOGON waits."""
        srv, s = self.server, self.server.cfg.server
        if self.account is not None:
            self.protocol_error(Reject.ALREADY_LOGGED_ON, MsgType.LOGON)
            return
        if srv.role not in ("primary", "replica"):   # a standby, or a primary that lost its lease: the client tries the next address
            self.write(wire.encode(MsgType.LOGON_REJECTED, reason=Reject.NOT_PRIMARY))
            self.close(None)
            return
        acct_id = int(body["account"])
        acct = srv.accounts.get(acct_id)
        auth = srv.auth
        if auth.logon_locked(acct_id, acct is not None, self.peer):
            return self.logon_reject(Reject.LOCKED_OUT, account=acct_id)
        sig_ok = acct is not None and hmac.compare_digest(
            hmac.new(acct.key, frame[8:40], hashlib.sha256).digest(), frame[40:72])
        if not sig_ok:
            auth.logon_failed(acct_id, acct is not None, self.peer)
            return self.logon_reject(Reject.AUTH_FAILED, delay=s.auth_failure_delay_s, account=acct_id)
        if int(body["proto_version"]) != wire.SCHEMA_VERSION:
            return self.logon_reject(Reject.UNSUPPORTED_VERSION, account=acct_id)
        ts = int(body["timestamp_ns"])
        if abs(ts - time.time_ns()) > s.logon_skew_s * 1e9:
            return self.logon_reject(Reject.STALE_TIMESTAMP, account=acct_id)
        stored = auth.claim_logon(acct_id, ts)
        if stored is None:
            return self.logon_reject(Reject.REPLAYED_LOGON, account=acct_id)
        auth.logon_succeeded(acct_id, self.peer)
        if stored.done():
            return self.logon_stored(stored, acct, body)
        self.logon_storing = True
        self.transport.pause_reading()
        stored.add_done_callback(lambda f: srv.loop.call_soon_threadsafe(self.logon_stored, f, acct, body))

    def logon_stored(self, stored, acct, body):
        """The logon's timestamp is durable (or could not be written): accept, or refuse."""
        srv, s = self.server, self.server.cfg.server
        resume, self.logon_storing = self.logon_storing, False
        if self.closed:
            return
        try:
            stored.result()
        except Exception as e:            # lmdb.Error, OSError: nothing is acknowledged
            log.error("logon of account %s not accepted: its timestamp could not be stored: %s", acct.name, e)
            return self.logon_reject(Reject.JOURNAL_UNAVAILABLE, account=acct.id)
        self.account = acct
        srv.unpend(self)
        self.session_id = srv.next_session
        srv.next_session += 1
        self.cancel_on_disconnect = bool(int(body["flags"]) & wire.LogonFlag.CANCEL_ON_DISCONNECT)
        self.heartbeat = max(s.heartbeat_ms, int(body["heartbeat_ms"]) or s.heartbeat_ms) / 1000
        # at most the reserved id (CLIENT_ORDER_ID_RESERVED), which always fits the u64 field
        next_clid = min(int(srv.engine.acct_arr["last_clid"][acct.id]) + 1, wire.MAX_CLIENT_ORDER_ID + 1)
        self.write(wire.encode(MsgType.LOGON_ACCEPTED, session_id=self.session_id,
                               heartbeat_ms=int(self.heartbeat * 1000), next_seq=acct.delivered,
                               next_client_order_id=next_clid, server_time_ns=time.time_ns()))
        want = int(body["next_seq"]) or 1
        log.info("logon", extra={"event": "logon", "account": acct.name, "session": self.session_id, "peer": self.peer})
        # acct.delivered, not next_seq: the reports of batches not committed yet reach this session
        # when they are (it joins acct.sessions now), so the loop need not wait for them
        if want < acct.delivered and not acct.has(want) and srv.journal is not None:
            srv.loop.create_task(srv.replay_from_journal(self, acct, want))   # joins acct.sessions when caught up
        else:
            if want < acct.delivered:
                self.write(acct.replay_from(want))
            acct.sessions.add(self)
        if resume and not self.closed:    # what the client sent after its LOGON, then reading again
            self.transport.resume_reading()
            try:
                self.process()
            finally:
                srv.input_done()

    def logon_reject(self, reason, delay=0.0, account=0):
        self.server.auth.logon_refused(reason, account, self.peer)

        def send():
            if not self.closed:
                self.write(wire.encode(MsgType.LOGON_REJECTED, reason=reason))
                self.close(None)
        if delay:
            self.transport.pause_reading()
            self.server.loop.call_later(delay, send)
        else:
            send()

    # -- queries --
    def query(self, t, body):
        srv = self.server
        rid = int(body["request_id"])
        acct = self.account.id
        if srv.rebuilding:         # the engine holds a batch the journal refused: show nothing of it
            return self.send_list(QUERY_RESPONSE[t], rid, [], status=Reject.JOURNAL_UNAVAILABLE)
        if t == MsgType.SYMBOL_DIRECTORY_REQUEST:
            states = np.array([srv.engine.symbol_state(int(s)) for s in srv.symbol_entries["symbol"]], dtype=np.uint8)
            entries = srv.symbol_entries.copy()
            entries["state"] = states
            self.send_list(MsgType.SYMBOL_DIRECTORY, rid, entries)
        elif t == MsgType.BOOK_DEPTH_REQUEST:
            sym = int(body["symbol"])
            levels = max(1, min(int(body["levels"]) or 10, wire.MAX_DEPTH_LEVELS))
            if not srv.engine.symbol_state(sym):
                return self.send_list(MsgType.BOOK_DEPTH, rid, [], status=Reject.UNKNOWN_SYMBOL)
            bids, asks = srv.engine.depth(sym, levels)
            rows = [dict(price=p, qty=q, orders=c, side=Side.BUY) for p, q, c in bids] + \
                   [dict(price=p, qty=q, orders=c, side=Side.SELL) for p, q, c in asks]
            self.send_list(MsgType.BOOK_DEPTH, rid, rows)
        elif t == MsgType.OPEN_ORDERS_REQUEST:
            self.send_list(MsgType.OPEN_ORDERS, rid, [self._order_row(o) for o in srv.engine.open_orders(acct)])
        elif t == MsgType.ORDER_STATUS_REQUEST:
            oid, clid = int(body["order_id"]), int(body["client_order_id"])
            if oid:
                o = srv.engine.order(oid)
                found = [o] if o and o["account"] == acct else []
            else:
                found = [o for o in srv.engine.open_orders(acct) if o["client_order_id"] == clid]
            self.send_list(MsgType.ORDER_STATUS, rid, [self._order_row(o) for o in found],
                           status=0 if found else Reject.UNKNOWN_ORDER)
        elif t in (MsgType.POSITIONS_REQUEST, MsgType.PORTFOLIO_REQUEST):
            risk = srv.engine.risk
            if risk is None:
                return self.send_list(QUERY_RESPONSE[t], rid, [], status=Reject.RISK_OFF)
            if t == MsgType.POSITIONS_REQUEST:
                rows = [{k: p[k] for k in wire.POSITION_ENTRY.offsets if not k.startswith("_")}
                        for p in risk.positions(acct)]
                return self.send_list(MsgType.POSITIONS, rid, rows)
            pf = risk.portfolio(acct)
            pf["leverage_bps"] = -1 if pf["leverage_bps"] is None else pf["leverage_bps"]
            pf["kill"] = int(pf["kill"] or pf["kill_all"])
            row = {k: pf[k] for k in wire.PORTFOLIO_ENTRY.offsets if k in pf}
            row.update(open_orders=int(srv.engine.acct_arr["open"][acct]), cash_decimals=risk.cash_decimals)
            self.send_list(MsgType.PORTFOLIO, rid, [row])
        elif t == MsgType.ALGOS_REQUEST:
            algos = srv.engine.algos
            if algos is None:
                return self.send_list(MsgType.ALGOS, rid, [], status=Reject.ALGOS_OFF)
            names = [k for k in wire.ALGO_ENTRY.offsets if not k.startswith("_")]
            rows = []
            for p in algos.parents(acct):
                p.update(limit_price=p["limit"], arrival_price=p["arrival"], child_order_id=p["child_oid"],
                         start_ts_ns=p["start_ns"], end_ts_ns=p["end_ns"])
                rows.append({k: p[k] for k in names})
            self.send_list(MsgType.ALGOS, rid, rows)
        elif t in riskqueries.REQUESTS:
            srv.risk_queries.answer(self, t, body)
        elif t in feedsmod.REQUESTS:
            srv.feeds.request(self, t, body)

    @staticmethod
    def _order_row(o):
        return {k: o[k] for k in ("order_id", "client_order_id", "symbol", "side", "order_type", "tif", "state",
                                  "price", "stop_price", "qty", "leaves", "shown", "filled")}

    def send_list(self, t, rid, rows, status=0):
        """A query's response, in wire order (see Server.hold)."""
        data = self.list_frames(t, rid, rows, status)
        if not self.server.hold(self, QUERY, (data, t, rid)):
            self.write(data)

    @staticmethod
    def list_frames(t, rid, rows, status=0):
        per_frame = (wire.MAX_FRAME - wire.frame_size(t)) // wire.ENTRY[t].size
        chunks = [rows[i:i + per_frame] for i in range(0, len(rows), per_frame)] or [rows[:0]]
        return b"".join(wire.encode(t, entries=chunk, request_id=rid, count=len(chunk),
                                    more=int(i < len(chunks) - 1), status=status) for i, chunk in enumerate(chunks))

    def send(self, data):
        """A reply to one of this session's frames: behind the reports of every command applied
        before it (Server.hold), or now when nothing is outstanding (or before logon: no reports)."""
        if data and (self.account is None or not self.server.hold(self, REPLY, data)):
            self.write(data)

    def close_after(self, reason):
        """close(reason) in wire order: after the replies and reports before it (Server.hold)."""
        if self.account is not None and self.server.hold(self, CLOSE, reason):
            self.closing = True
        else:
            self.close(reason)

    # -- output and lifetime --
    def write(self, data):
        if self.closed or self.finishing or not data:
            return
        self.transport.write(data)
        self.server.hot.bytes_out += len(data)
        self.last_sent = time.monotonic()
        if self.transport.get_write_buffer_size() > self.server.cfg.server.output_buffer_bytes:
            log.warning("slow consumer closed", extra={"event": "slow_consumer", "session": self.session_id,
                                                       "account": self.account and self.account.name, "peer": self.peer})
            self.server.hot.count_reject(Reject.SLOW_CONSUMER)
            self.close(Reject.SLOW_CONSUMER, drain=True)

    def protocol_error(self, reason, msg_type):
        log.info("protocol error", extra={"event": "protocol_error", "reason": Reject(reason).name, "peer": self.peer,
                                          "session": self.session_id, "offset": self.stream_offset})
        self.send(wire.encode(MsgType.PROTOCOL_ERROR, reason=reason, msg_type=msg_type, offset=self.stream_offset))
        self.close_after(None)

    def tick(self, now):
        if self.closed:
            return
        s = self.server.cfg.server
        if self.account is None:
            if now - self.opened > self.server.logon_timeout():
                self.close(None)
            return
        if now - self.last_recv > self.heartbeat * s.heartbeat_timeout_factor:
            self.write(wire.encode(MsgType.LOGOUT, reason=Reject.HEARTBEAT_TIMEOUT))
            self.close(None)
        elif now - self.last_sent >= self.heartbeat:
            self.write(wire.encode(MsgType.HEARTBEAT, timestamp_ns=time.time_ns()))

    def finish(self):
        """At shutdown, after the last report: half-close (FIN after what is written) and read and
        drop what the client still sends until close(). Closing a socket with unread input sends a
        reset, which may destroy the reports still in flight to the client (END_OF_SESSION)."""
        if self.closed or self.transport is None or not self.transport.can_write_eof():
            self.close(None)
            return
        self.finishing = True
        self.transport.write_eof()

    def unsent(self):
        """Bytes written to this connection that its peer has not acknowledged yet."""
        n = self.transport.get_write_buffer_size() if self.transport is not None else 0
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            try:
                n += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            except OSError:
                pass
        return n

    def close(self, reason, abort=False, drain=False):
        """Close, with a LOGOUT(reason) first unless reason is None. drain=True (a slow consumer):
        the LOGOUT goes behind what is already buffered, then a half-close (FIN after it) and
        the client's input is dropped until it closes, so it can read every frame up to the
        LOGOUT; a client that does not within SLOW_CONSUMER_DRAIN_S gets a reset."""
        if self.closed:
            return
        srv = self.server
        if reason is not None and drain:
            self.transport.write(wire.encode(MsgType.LOGOUT, reason=reason))    # past the output cap: once
        elif reason is not None and not abort:
            self.write(wire.encode(MsgType.LOGOUT, reason=reason))
            if self.closed:                   # that write made it a slow consumer: closed already
                return
        self.closed = True
        srv.conns.discard(self)
        srv.feeds.drop(self)
        srv.unpend(self)
        acct = self.account
        if acct is not None:
            acct.sessions.discard(self)
            if self.cancel_on_disconnect and srv.journal_ok and not srv.stopping and \
                    not any(c.cancel_on_disconnect for c in acct.sessions):
                if srv.engine.algos is not None:      # its parents first (they would send new children)
                    for p in srv.engine.algos.parents(acct.id):
                        srv.submit(dict(kind=CommandKind.ALGO_CANCEL, account=acct.id, order_id=p["parent_id"],
                                        session=self.session_id))
                srv.submit(dict(kind=CommandKind.MASS_CANCEL, account=acct.id, session=self.session_id))
        if self.transport is None:
            return
        if drain and self.transport.can_write_eof():
            self.finishing = True
            self.transport.write_eof()
            srv.loop.call_later(SLOW_CONSUMER_DRAIN_S, self.transport.abort)
        else:
            self.transport.abort() if abort else self.transport.close()


def configure_logging(level="INFO"):
    """Every logger, warnings included, to one stream (stderr) in one shape (ops.JsonFormatter)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(opsmod.JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)


async def _lead(srv, standby, stop):
    """Replication (engine/SCALING.md): apply the stream to its end (a standby: keep following it
    until the leader lease lapses), take the lease, apply what the stream gained meanwhile,
    publish what this journal holds beyond the stream, and renew the lease from then on. False
    when `stop` was set first; replication.Diverged / Fenced when this node cannot lead."""
    repl = srv.repl
    loop = asyncio.get_running_loop()
    repl.server_loop = loop
    repl.on_fenced = srv.fence
    await repl.run(repl.connect())
    srv.role = "standby"
    await srv.listen()                        # refusing logons (NOT_PRIMARY) until it leads
    apply, failure = _applier(srv, loop)
    end_seq, end_last, _ = await repl.run(repl.stream_end())
    start = repl.saved_pos + 1 if 0 < repl.saved_pos <= end_seq else 1
    if standby or end_last > srv.journal.last_seq:
        log.info("replication: following the stream from stream seq %d (journal at seq %d)", start,
                 srv.journal.last_seq)
        await repl.run(repl.follow(apply, start))
    holder = await repl.run(repl.lease_holder())
    if not standby and holder is not None and holder[0] != repl.node:
        raise replmod.Fenced(f"the leader lease is held by node {holder[0]!r}: start this node with --standby")
    seen = {}
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not await repl.run(repl.try_acquire(seen)):
            opsmod.notify("WATCHDOG=1")       # (a no-op outside systemd)
            await asyncio.wait([failure, stopping], timeout=repl.lease_s / 4, return_when=asyncio.FIRST_COMPLETED)
            if failure.done():
                failure.result()
            if stop.is_set():
                return False
        log.warning("replication: took the leader lease (node %s, revision %d)", repl.node, repl.rev,
                    extra={"event": "leader"})
        while True:                           # apply the stream to its end
            if failure.done():
                failure.result()
            end_seq, end_last, end_digest = await repl.run(repl.stream_end())
            if end_last <= srv.journal.last_seq:
                break
            if repl.follower is None:
                await repl.run(repl.follow(apply, start))
            opsmod.notify("WATCHDOG=1")
            await asyncio.sleep(0.002)
    finally:
        stopping.cancel()
    await repl.run(repl.stop_following())
    repl.stream_seq = end_seq
    n = 0
    for first, last, value in _records_after(srv.journal, end_last, end_digest):
        await repl.run(repl._ship(value, first, last, None))
        n += 1
    if n:
        log.info("replication: published %d journal records the stream lacked", n)
    srv.renewer = asyncio.run_coroutine_threadsafe(repl.renew_forever(), repl.loop)
    return True


def _applier(srv, loop):
    """(apply, failure): the follower's callback, applying records on the server's loop, and a
    future that gets its replication.Diverged (nothing more is applied after one)."""
    failure = loop.create_future()

    def failed(e):
        if not failure.done():
            failure.set_exception(e)

    async def apply(recs):                    # on the replication loop: apply on the server's, wait
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(srv.apply_shipped(recs), loop))
        except Exception as e:
            loop.call_soon_threadsafe(failed, e)
            await asyncio.sleep(3600)         # stop here: nothing after a record that failed
    return apply, failure


async def _read_replica(srv, stop):
    """A read replica (`serve --replica`): follow the stream for good, never leading. Sessions log
    on, get their execution reports (replayed and live, as the primary sequenced them), answer
    queries and market data from the state after the last record applied; order entry is
    answered NOT_PRIMARY (journal_ok stays false: the hot path applies nothing here)."""
    repl = srv.repl
    loop = asyncio.get_running_loop()
    repl.server_loop = loop
    await repl.run(repl.connect())
    srv.role = "replica"
    srv.journal_ok = False
    apply, failure = _applier(srv, loop)
    end_seq, _, _ = await repl.run(repl.stream_end())
    start = repl.saved_pos + 1 if 0 < repl.saved_pos <= end_seq else 1
    await repl.run(repl.follow(apply, start))
    await srv.listen()
    timers = asyncio.ensure_future(srv.timers())     # heartbeats, logon timeouts (it submits nothing here)
    opsmod.notify(f"READY=1\nSTATUS=read replica from stream seq {start}")
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([failure, stopping], return_when=asyncio.FIRST_COMPLETED)
        if failure.done():
            failure.result()
    finally:
        stopping.cancel()
        timers.cancel()
        await repl.run(repl.stop_following())


def _records_after(journal, seq, digest):
    """(first, last, value) of each journal record after command seq `seq`, after checking that
    the record ending at `seq` has `digest` (the stream's last; None: not checked):
    replication.Diverged if not."""
    with journal._txn() as txn:
        cur = txn.cursor()
        if seq:
            if not cur.set_range(struct.pack(">Q", seq + 1)):
                cur.last()
            else:
                cur.prev()
            value = bytes(cur.value())
            n_cmds = struct.unpack_from("<I", value)[0]
            end = int(np.frombuffer(value, dtype=COMMAND.dtype, count=n_cmds, offset=24)["seq"][-1])
            if end != seq or (digest is not None and value[-16:] != digest):
                raise replmod.Diverged(f"this journal's record ending at seq {seq} is not the stream's last one")
            more = cur.next()
        else:
            more = cur.first()
        rows = []
        while more:
            value = bytes(cur.value())
            n_cmds = struct.unpack_from("<I", value)[0]
            seqs = np.frombuffer(value, dtype=COMMAND.dtype, count=n_cmds, offset=24)["seq"]
            rows.append((int(seqs[0]), int(seqs[-1]), value))
            more = cur.next()
    return rows


async def _serve(cfg, standby=False, replica=False):
    srv = Server(cfg)
    ops = None
    if cfg.server.ops_port is not None:
        ops = opsmod.Ops(srv, cfg.server.ops_host, cfg.server.ops_port, cfgmod.ops_token(cfg.server))
        ops_port = await ops.start()
        if cfg.server.ops_port_file:
            with open(cfg.server.ops_port_file + ".tmp", "w") as f:
                f.write(str(ops_port))
            os.replace(cfg.server.ops_port_file + ".tmp", cfg.server.ops_port_file)
        log.info("ops listening on %s:%d (/metrics, /health/*)", cfg.server.ops_host, ops_port)
    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(
        2, thread_name_prefix="helper", initializer=helper_setup))
    stop = asyncio.Event()           # before recovery: a SIGTERM/SIGINT during start-up stops cleanly after it
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    opsmod.notify("STATUS=recovering")
    await srv.recover()
    srv.added_accounts.prune()         # an account added at run time whose ADD_ACCOUNT never got journaled
    if cfg.replication.servers:
        srv.repl = replmod.Replicator(cfg, cfg.journal.path)
        if replica:
            try:
                await _read_replica(srv, stop)
            finally:
                await srv.stop()
                srv.repl.shutdown()
            return
        try:
            if standby:                # started, as systemd sees it (READY=1), its watchdog fed by _lead
                opsmod.notify("READY=1\nSTATUS=standby: following the stream")
            if not await _lead(srv, standby, stop):
                await srv.stop()
                srv.repl.shutdown()
                return
        except BaseException:
            srv.repl.shutdown()
            await srv.stop()
            raise
    await srv.start()
    admin = None
    if cfg.server.admin_port is not None and cfg.admins:
        admin = adminmod.AdminListener(srv)
        admin_port = await admin.start(cfg.server.admin_host, cfg.server.admin_port)
        if cfg.server.admin_port_file:
            with open(cfg.server.admin_port_file + ".tmp", "w") as f:
                f.write(str(admin_port))
            os.replace(cfg.server.admin_port_file + ".tmp", cfg.server.admin_port_file)
        log.info("admin listening on %s:%d", cfg.server.admin_host, admin_port)
    elif cfg.server.admin_port is not None:
        log.info("admin listener off: no [[admins]] in the config")
    opsmod.notify(f"READY=1\nSTATUS=trading, next seq {srv.next_cmd_seq}")
    gc.collect()
    gc.freeze()                      # start-up objects never need collecting again
    timers = asyncio.ensure_future(srv.timers())
    await stop.wait()
    log.info("shutting down")
    opsmod.notify("STOPPING=1")
    await srv.stop()
    timers.cancel()
    if srv.repl is not None:
        await srv.repl.run(srv.repl.release())     # a standby takes over at once
        srv.repl.shutdown()
    for listener in (ops, admin):
        if listener is not None:
            listener.close()


def serve(cfg: cfgmod.Config, standby=False, replica=False):
    import uvloop
    configure_logging()
    global ENGINE_CPU
    if cfg.server.cpu is not None:
        HELPER_CPUS.update(os.sched_getaffinity(0) - {cfg.server.cpu})
        os.sched_setaffinity(0, {cfg.server.cpu})
        ENGINE_CPU = cfg.server.cpu
    uvloop.run(_serve(cfg, standby, replica))


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`serve`'s options, added to `p` (the `trading-engine serve` subcommand's parser)."""
    p.add_argument("--config", help="TOML config file (default: the embedded demo config)")
    p.add_argument("--standby", action="store_true",
                   help="hot standby: follow the primary's journal stream ([replication]), serve once "
                        "its leader lease lapses (engine/SCALING.md)")
    p.add_argument("--replica", action="store_true",
                   help="read replica: follow the journal stream for good, serving sessions' reports, queries "
                        "and market data; order entry is refused (NOT_PRIMARY)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Load the config and serve until SIGTERM/SIGINT; an expected failure (config, a port in
    use, a journal it cannot open) is one line on stderr and exit code 2 (config) or 1."""
    try:
        cfg = cfgmod.load(args.config)
        for a in cfg.accounts:            # each secret present and long enough, before anything starts
            cfgmod.account_secret(a)
    except (cfgmod.ConfigError, OSError) as e:
        print(f"trading-engine: {e}", file=sys.stderr)
        return 2
    standby, replica = getattr(args, "standby", False), getattr(args, "replica", False)
    if (standby or replica) and not cfg.replication.servers:
        print("trading-engine: --standby and --replica need [replication] servers in the config", file=sys.stderr)
        return 2
    if standby and replica:
        print("trading-engine: --standby or --replica, not both", file=sys.stderr)
        return 2
    try:
        serve(cfg, standby, replica)
    except (JournalError, JournalRefused, cfgmod.ConfigError, replmod.ReplicationError) as e:
        print(f"trading-engine: {e}", file=sys.stderr)
        return 1
    except (OSError, lmdb.Error) as e:
        print(f"trading-engine: cannot serve: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:        # before the loop's handlers were installed (imports, config)
        print("trading-engine: interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv=None):
    return run(add_arguments(argparse.ArgumentParser(prog="trading-engine serve")).parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
