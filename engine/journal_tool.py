"""`trading-engine journal ACTION PATH ...`: read the journal, never write it.

    stats PATH                   records, sequence and time range, size, snapshots
    verify PATH                  checksums, hash chain, sequence gaps, the end against the tail file,
                                 data.mdb's size against LMDB's meta (exit 1 naming the first bad seq)
    dump PATH [filters]          the records as a table, JSON lines (msgspec) or CSV
    audit PATH ORDER_ID          the whole life of one order: its command, acceptance, fills,
                                 amends, triggers, cancel
                                 (both in the units people use: symbol names, prices and
                                 quantities in the symbol's decimals, cash in risk.cash_decimals,
                                 limits as the config takes them, from --config, default the
                                 embedded demo config; --raw: the journal's integers and ids)
    replay PATH [--until SEQ|TIME] [--compare-snapshot [FILE]]
                                 rebuild the state in a fresh engine at full speed; print the
                                 books and open orders at that point (events/s on stderr, so
                                 stdout is the same on every run over the same journal)

Safe on a live journal: it opens LMDB read-only as another reader process and reads in chunks,
each in its own short read transaction (a long one would make the writer's file grow), and on a
copied journal (a directory it may not write: then it opens without the lock file, which is
only safe when no process writes that copy).

Rows: every command is followed by the events it caused. A filter on account, symbol or order id
selects the records that carry it; a command is also shown when an event it caused is selected
(so an order's NEW_ORDER appears with its ACCEPTED, a CANCEL with its CANCELLED). --event-type
takes command kinds (new_order, cancel, ...) and event kinds (accepted, fill, ...). Admin commands
carry the operator's id ([[admins]] id; 0 = the config's start-up set-up, or not an admin
command) in the `op` column; --operator N selects one operator's commands and their events.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import re
import sys
import time

import lmdb
import msgspec
import numpy as np

from engine import config as cfgmod, notes, snapshot
from engine.journal import MARKER, Journal, JournalError, JournalRefused, has_journal_files
from protocol.codes import AccountState, AlertType, CancelReason, CommandKind, Disposition, EventKind, KycState, \
    LimitScope, OrderState, OrderType, Reject, Side, SymbolState, TimeInForce
from protocol.records import COMMAND, EVENT
from protocol.units import from_units

COMMAND_FIELDS = [f for f, _, _ in COMMAND.fields if not f.startswith("_")]
EVENT_FIELDS = [f for f, _, _ in EVENT.fields if not f.startswith("_")]
# One column set for table and CSV: the command's and the event's fields under one header.
COLUMNS = ["record", "seq", "time", "kind", "operator", "account", "symbol", "side", "order_id", "client_order_id",
           "price", "qty", "leaves", "reason", "other_account", "other_order_id", "other_leaves", "trade_id",
           "order_type", "tif", "stop_price", "display_qty", "expire_ts_ns", "session", "ts_ns"]
TABLE = [("record", 3), ("seq", 8), ("time", 30), ("kind", 16), ("operator", 3), ("account", 4), ("symbol", 6),
         ("side", 4), ("order_id", 8), ("client_order_id", 8), ("price", 12), ("qty", 10), ("leaves", 10),
         ("reason", 22), ("other_order_id", 8), ("trade_id", 6)]
TABLE_HEAD = {"record": "rec", "operator": "op", "account": "acct", "client_order_id": "clid",
              "other_order_id": "maker", "trade_id": "trade", "symbol": "sym"}


JOURNAL_KEY = None       # a keyed journal's key (--key-file/--key-env), set by main()


def open_journal(path: str, key: bytes | None = None) -> Journal:
    """A reader of the journal at path (live or copied); SystemExit(2) if there is none, JournalError
    if it has gone (see engine/journal.py) or data.mdb is truncated (checked before it is mapped).
    key: a keyed journal's key (default: the one --key-file/--key-env gave)."""
    if not os.path.exists(os.path.join(path, "data.mdb")) and not has_journal_files(path):
        print(f"trading-engine journal: no journal at {path}", file=sys.stderr)
        raise SystemExit(2)
    key = key if key is not None else JOURNAL_KEY
    try:
        return Journal(path, readonly=True, key=key)
    except lmdb.Error:
        # a copy in a directory this user cannot write (no lock file can be made): no lock
        return Journal(path, readonly=True, lock=False, key=key)


def parse_time(text: str) -> int:
    """ns since the epoch from an integer (ns, optionally written @NS) or an ISO 8601 time (UTC
    unless it says otherwise)."""
    text = text.removeprefix("@")
    if text.lstrip("-").isdigit():
        return int(text)
    m = re.fullmatch(r"([^.]*?)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?", text.strip())
    if not m:
        raise SystemExit(f"trading-engine journal: bad time {text!r}: ISO 8601 or ns since the epoch")
    t = dt.datetime.fromisoformat(m.group(1) + (m.group(3) or "").replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp()) * 10**9 + int((m.group(2) or "0").ljust(9, "0"))


def format_time(ns: int) -> str:
    """ISO 8601 UTC with nanoseconds (integer arithmetic: the same text on every run)."""
    s, frac = divmod(ns, 10**9)
    try:
        return dt.datetime.fromtimestamp(s, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"
    except (OverflowError, ValueError, OSError):    # beyond year 9999 (a u64 time field): the number itself
        return f"@{ns}"


def _name(enum, value):
    try:
        return enum(value).name.lower()
    except ValueError:
        return str(value)


def reason_name(kind: int, reason: int) -> str:
    if reason == 0:
        return ""
    enum = {EventKind.REJECTED: Reject, EventKind.CANCELLED: CancelReason, EventKind.SYMBOL_STATE: SymbolState,
            EventKind.ACCOUNT_STATE: AccountState, EventKind.KYC_STATE: KycState,
            EventKind.ALERT_DISPOSITION: AlertType}
    return _name(enum[kind], reason) if kind in enum else str(reason)


def command_row(c, fmt=None) -> dict:
    row = {"record": "command", "seq": int(c["seq"]), "ts_ns": int(c["ts_ns"]), "time": format_time(int(c["ts_ns"]))}
    for f in COMMAND_FIELDS:
        if f not in row:
            row[f] = int(c[f])
    row["kind"] = _name(CommandKind, row["kind"])
    row["side"] = _name(Side, row["side"]) if row["side"] else ""
    row["order_type"] = _name(OrderType, row["order_type"]) if row["order_type"] else ""
    row["tif"] = _name(TimeInForce, row["tif"]) if row["tif"] else ""
    return row


def event_row(e, ts_ns: int) -> dict:
    row = {"record": "event", "seq": int(e["seq"]), "ts_ns": ts_ns, "time": format_time(ts_ns)}
    for f in EVENT_FIELDS:
        if f not in row:
            row[f] = int(e[f])
    row["reason"] = reason_name(row["kind"], row["reason"])
    row["kind"] = _name(EventKind, row["kind"])
    row["side"] = _name(Side, row["side"]) if row["side"] else ""
    row["cmd_kind"] = _name(CommandKind, row["cmd_kind"]) if row["cmd_kind"] else ""
    return row


class Human:
    """A row's integers in the units people use, from the config (the journal holds no symbol
    names or decimals): symbol names; prices and quantities in the symbol's decimals; cash in
    risk.cash_decimals; limits as the config takes them (engine/config.py RiskLimits); the admin
    commands' side and order_type fields by what they carry. Values are Decimals (JSON: strings)."""

    ORDER_EVENT_QTY = ("qty", "leaves", "other_leaves")
    SWITCH = {CommandKind.KILL_SWITCH: {1: "on", 2: "off"}, CommandKind.RESTRICT_SYMBOL: {1: "restricted", 2: "allowed"}}

    def __init__(self, cfg):
        self.symbols = {s.id: s for s in cfg.symbols}
        self.cash_decimals = cfg.risk.cash_decimals

    def _limit(self, row, kind, value, scope, sym, clear):
        row["side"] = _name(LimitScope, scope)
        field = cfgmod.LIMIT_FIELD.get(kind)
        if field is None:
            return
        row["order_type" if row["record"] == "command" else "reason"] = field
        if not clear:
            row["qty"] = cfgmod.limit_human(kind, value, self.cash_decimals, sym.qty_decimals if sym else 0)

    def command(self, c, row) -> dict:
        k, sym = int(c["kind"]), self.symbols.get(int(c["symbol"]))
        if sym is not None:
            row["symbol"] = sym.name
        if k in (CommandKind.DEPOSIT, CommandKind.WITHDRAW):
            row["qty"] = from_units(int(c["qty"]), self.cash_decimals)
        elif k == CommandKind.SET_LIMIT:
            self._limit(row, int(c["order_type"]), int(c["qty"]), int(c["side"]), sym, int(c["flags"]) & 1)
        elif k == CommandKind.SET_ACCOUNT_STATE:
            row["side"] = _name(AccountState, int(c["side"]))
        elif k == CommandKind.SET_KYC:
            row["side"] = "clear" if int(c["flags"]) & 1 else _name(KycState, int(c["side"]))
        elif k == CommandKind.ALERT_DISPOSITION:
            row["side"] = _name(Disposition, int(c["side"]))
            row["order_type"] = _name(AlertType, int(c["order_type"]))
            if hexd := notes.hexdigest(int(c["price"]), int(c["stop_price"])):
                row["note_digest"] = hexd          # the note's text: engine/notes.py
        elif k in self.SWITCH:
            row["side"] = self.SWITCH[k].get(int(c["side"]), str(int(c["side"])))
        elif k in (CommandKind.NEW_ORDER, CommandKind.CANCEL, CommandKind.AMEND, CommandKind.MARK_PRICE) and sym:
            for f in ("price", "stop_price"):
                row[f] = from_units(int(c[f]), sym.price_decimals)
            for f in ("qty", "display_qty"):
                row[f] = from_units(int(c[f]), sym.qty_decimals)
        return row

    def event(self, e, row) -> dict:
        k, sym = int(e["kind"]), self.symbols.get(int(e["symbol"]))
        if sym is not None:
            row["symbol"] = sym.name
        if k == EventKind.BALANCE:
            row["qty"] = from_units(int(e["qty"]), self.cash_decimals)
            row["leaves"] = from_units(int(e["leaves"]), self.cash_decimals)
        elif k == EventKind.LIMIT_SET:
            if int(e["reason"]):           # (reason 0: a RESTRICT_SYMBOL, qty 1 = restricted)
                self._limit(row, int(e["reason"]), int(e["qty"]), int(e["side"]), sym, int(e["flags"]) & 1)
        elif k == EventKind.BREAKER:
            row["reason"] = {1: "tripped", 2: "reset"}.get(int(e["reason"]), row["reason"])
            if sym:
                row["price"] = from_units(int(e["price"]), sym.price_decimals)
        elif k == EventKind.MARK and sym:
            row["price"] = from_units(int(e["price"]), sym.price_decimals)
        elif k not in (EventKind.ACCOUNT_STATE, EventKind.SYMBOL_STATE, EventKind.MASS_CANCEL_DONE,
                       EventKind.ACCOUNT_ADDED, EventKind.KYC_STATE, EventKind.ALERT_DISPOSITION) and sym:
            row["price"] = from_units(int(e["price"]), sym.price_decimals)
            for f in self.ORDER_EVENT_QTY:
                row[f] = from_units(int(e[f]), sym.qty_decimals)
        return row


def _plain(rec, row):
    return row


def load_units(args):
    """(command, event) row finishers for dump and audit: human units from the config, or --raw;
    args.symbol (a name or an id) resolved to the id. None (after a message) when the config fails."""
    symbol = getattr(args, "symbol", None)
    if args.raw and (symbol is None or str(symbol).isdigit()):
        args.symbol = None if symbol is None else int(symbol)
        return _plain, _plain
    try:
        cfg = cfgmod.load(args.config)
    except (cfgmod.ConfigError, OSError) as e:
        print(f"trading-engine journal: {e}", file=sys.stderr)
        return None
    if symbol is not None:
        by_name = {s.name.upper(): s.id for s in cfg.symbols}
        if str(symbol).isdigit():
            args.symbol = int(symbol)
        elif str(symbol).upper() in by_name:
            args.symbol = by_name[str(symbol).upper()]
        else:
            print(f"trading-engine journal: unknown symbol {symbol!r} in "
                  f"{args.config or 'the embedded demo config'}: one of {', '.join(by_name)} (or an id)",
                  file=sys.stderr)
            return None
    if args.raw:
        return _plain, _plain
    if args.config is None:
        print("trading-engine journal: symbol names and units from the embedded demo config; give the server's "
              "with --config FILE (or --raw)", file=sys.stderr)
    human = Human(cfg)
    return human.command, human.event


class Filter:
    """Which records of a batch to show (vectorized per batch: numpy masks)."""

    def __init__(self, args):
        self.from_seq = args.from_seq
        self.to_seq = args.to_seq
        self.since = parse_time(args.since) if args.since else None
        self.until = parse_time(args.until) if args.until else None
        self.account = args.account
        self.symbol = args.symbol
        self.order_id = args.order_id
        self.operator = args.operator
        kinds = [k.strip().upper() for k in (args.event_type or "").split(",") if k.strip()]
        bad = [k for k in kinds if k not in CommandKind.__members__ and k not in EventKind.__members__]
        if bad:
            raise SystemExit(f"trading-engine journal: unknown --event-type {', '.join(bad).lower()}; one of "
                             f"{', '.join(k.lower() for k in [*CommandKind.__members__, *EventKind.__members__])}")
        self.cmd_kinds = [CommandKind[k] for k in kinds if k in CommandKind.__members__] if kinds else None
        self.ev_kinds = [EventKind[k] for k in kinds if k in EventKind.__members__] if kinds else None
        self.entity = self.account is not None or self.symbol is not None or self.order_id is not None

    def masks(self, cmds, events):
        """(commands mask, events mask) of the records to show."""
        cm = np.ones(len(cmds), dtype=bool)
        if self.from_seq is not None:
            cm &= cmds["seq"] >= self.from_seq
        if self.to_seq is not None:
            cm &= cmds["seq"] <= self.to_seq
        if self.since is not None:
            cm &= cmds["ts_ns"] >= self.since
        if self.until is not None:
            cm &= cmds["ts_ns"] <= self.until
        # the events of the commands in range
        pos = np.searchsorted(cmds["seq"], events["seq"])
        em = cm[np.minimum(pos, len(cmds) - 1)] if len(events) else np.zeros(0, dtype=bool)
        if self.entity:
            ce = np.ones(len(cmds), dtype=bool)
            ee = np.ones(len(events), dtype=bool)
            if self.account is not None:
                ce &= cmds["account"] == self.account
                ee &= (events["account"] == self.account) | (events["other_account"] == self.account)
            if self.symbol is not None:
                ce &= cmds["symbol"] == self.symbol
                ee &= events["symbol"] == self.symbol
            if self.order_id is not None:
                ce &= cmds["order_id"] == self.order_id
                ee &= (events["order_id"] == self.order_id) | (events["other_order_id"] == self.order_id)
            em &= ee
            caused = np.zeros(len(cmds), dtype=bool)
            if em.any():
                caused[np.unique(pos[em])] = True
            cm &= ce | caused
        if self.operator is not None:        # admin commands of one operator, with their events
            cm &= cmds["operator"] == self.operator
            em &= cm[np.minimum(pos, len(cmds) - 1)] if len(events) else em
        if self.cmd_kinds is not None:
            cm &= np.isin(cmds["kind"], self.cmd_kinds)
            em &= np.isin(events["kind"], self.ev_kinds)
        return cm, em


def rows(journal: Journal, flt: Filter, from_seq: int = 1, units=(_plain, _plain)):
    """Rows (dicts) of the selected records, each command followed by its events; units: the
    (command, event) row finishers of load_units."""
    for cmds, events in journal.batches(max(1, from_seq) if flt.from_seq is None else max(1, flt.from_seq)):
        if flt.to_seq is not None and int(cmds["seq"][0]) > flt.to_seq:
            return
        cm, em = flt.masks(cmds, events)
        if not cm.any() and not em.any():
            continue
        bounds = np.searchsorted(events["seq"], cmds["seq"], side="left")
        ends = np.searchsorted(events["seq"], cmds["seq"], side="right")
        for i in range(len(cmds)):
            ts = int(cmds["ts_ns"][i])
            if cm[i]:
                yield units[0](cmds[i], command_row(cmds[i]))
            for j in range(bounds[i], ends[i]):
                if em[j]:
                    yield units[1](events[j], event_row(events[j], ts))


def write_rows(out, fmt: str, it) -> int:
    n = 0
    if fmt == "jsonl":
        enc = msgspec.json.Encoder()
        for row in it:
            out.write(enc.encode(row).decode() + "\n")
            n += 1
    elif fmt == "csv":
        w = csv.DictWriter(out, fieldnames=COLUMNS + ["cmd_kind", "other_client_order_id", "strategy", "stp",
                                                      "flags"], extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in it:
            w.writerow(row)
            n += 1
    else:
        out.write(" ".join(f"{TABLE_HEAD.get(c, c):<{w}}" for c, w in TABLE).rstrip() + "\n")
        for row in it:
            row = dict(row, record="cmd" if row["record"] == "command" else "evt")
            out.write(" ".join(f"{str(row.get(c, '')):<{w}}" for c, w in TABLE).rstrip() + "\n")
            n += 1
    return n


# -- stats, verify --

def stats(args) -> int:
    j = open_journal(args.path)
    batches = commands = events = 0
    first_seq = last_seq = first_ts = last_ts = None
    try:
        tail = j.read_tail()             # before the scan: a live writer's tail never runs ahead of its commits
        if tail is None and os.path.exists(os.path.join(args.path, MARKER)) and j.records:
            raise JournalError(f"journal {args.path}: its tail file is missing (the journal's end cannot be checked)")
        for cmds, evs in j.batches():
            batches += 1
            commands += len(cmds)
            events += len(evs)
            if first_seq is None:
                first_seq, first_ts = int(cmds["seq"][0]), int(cmds["ts_ns"][0])
            last_seq, last_ts = int(cmds["seq"][-1]), int(cmds["ts_ns"][-1])
        if tail is not None:
            j.check_tail(tail)
    finally:
        j.env.close()
    if args.action == "verify":
        print(f"ok: {commands} commands in {batches} batches, seq {first_seq}..{last_seq}, checksums and chain intact")
        return 0
    size = os.path.getsize(os.path.join(args.path, "data.mdb"))
    snaps = snapshot.list_snapshots(os.path.join(args.path, "snapshots"))
    print(f"batches   {batches}\ncommands  {commands}\nevents    {events}\nseq       {first_seq}..{last_seq}\n"
          f"time_ns   {first_ts}..{last_ts}\nbytes     {size}\nsnapshots {len(snaps)}")
    for p in snaps:
        print(f"  {p.name} {p.stat().st_size} bytes")
    return 0


# -- dump, audit --

def dump(args) -> int:
    units = load_units(args)
    if units is None:
        return 2
    j = open_journal(args.path)
    try:
        n = write_rows(sys.stdout, args.format, rows(j, Filter(args), units=units))
    finally:
        j.env.close()
    print(f"{n} records", file=sys.stderr)
    return 0


def audit(args) -> int:
    """The order's records in journal order, then a summary. Reads until the order is done."""
    units = load_units(args)
    if units is None:
        return 2
    j = open_journal(args.path)
    oid = args.order_id
    life = []
    owner = None                      # (account, client order id), from its ACCEPTED
    done = None
    try:
        for cmds, events in j.batches():
            ev_hit = (events["order_id"] == oid) | (events["other_order_id"] == oid)
            cmd_hit = cmds["order_id"] == oid
            if owner is not None:     # a cancel or amend naming it by client order id
                cmd_hit |= (cmds["order_id"] == 0) & (cmds["account"] == owner[0]) & \
                           (cmds["client_order_id"] == owner[1]) & \
                           np.isin(cmds["kind"], [CommandKind.CANCEL, CommandKind.AMEND])
            if not ev_hit.any() and not cmd_hit.any():
                continue
            caused = set(events["seq"][ev_hit].tolist())
            for i in range(len(cmds)):
                seq = int(cmds["seq"][i])
                if not cmd_hit[i] and seq not in caused:
                    continue
                ts = int(cmds["ts_ns"][i])
                life.append(units[0](cmds[i], command_row(cmds[i])))
                for k in np.nonzero(ev_hit & (events["seq"] == seq))[0]:
                    e = events[k]
                    life.append(units[1](e, event_row(e, ts)))
                    maker = int(e["other_order_id"]) == oid and int(e["order_id"]) != oid
                    if e["kind"] == EventKind.ACCEPTED and owner is None:
                        owner = (int(e["account"]), int(e["client_order_id"]))
                    if e["kind"] == EventKind.CANCELLED and not maker:
                        done = "cancelled (" + reason_name(EventKind.CANCELLED, int(e["reason"])) + ")"
                    elif e["kind"] == EventKind.FILL and int(e["other_leaves" if maker else "leaves"]) == 0:
                        done = "filled"
            if done:
                break
    finally:
        j.env.close()
    if not life:
        print(f"order {oid}: not in the journal")
        return 1
    write_rows(sys.stdout, args.format, iter(life))
    if args.format == "table":
        acc = next((r for r in life if r["record"] == "event" and r["kind"] == "accepted"), None)
        fills = [r for r in life if r["record"] == "event" and r["kind"] == "fill"]
        print(f"\norder {oid}: account {owner[0] if owner else '?'} client order id {owner[1] if owner else '?'}"
              + (f", {acc['side']} {acc['qty']} @ {acc['price']} on symbol {acc['symbol']}, accepted at seq "
                 f"{acc['seq']} {acc['time']}" if acc else ""))
        print(f"{len(fills)} fills, {sum(r['qty'] for r in fills)} filled; "
              f"{done or 'still live at the end of the journal'}")
    return 0


# -- replay --

class ReplayDiverged(Exception):
    """The engine's events differ from the journal's at batch `seq` (another config than the server's)."""

    def __init__(self, seq: int):
        super().__init__(f"replay diverged from the journal at seq {seq}")
        self.seq = seq


def replayed(j: Journal, eng, until_seq: int | None = None, until_ns: int | None = None):
    """Feed the journal's commands into `eng` (a fresh engine_from_config), batch by batch, up to
    command seq until_seq / receive time until_ns; yield (commands, events) of each part fed, after
    checking the engine produced exactly the journaled events (ReplayDiverged otherwise); the caller
    then drops the engine's events (eng.clear_events(), or gateway.Hot.discard after encoding them).
    The one replay loop: `journal replay` and the risk analytics (engine/analytics.py) use it."""
    for cmds, events in j.batches(to_seq=until_seq):
        k = len(cmds)
        if until_seq is not None:
            k = int(np.searchsorted(cmds["seq"], until_seq, side="right"))
        if until_ns is not None:
            k = min(k, int(np.argmax(cmds["ts_ns"] > until_ns)) if (cmds["ts_ns"] > until_ns).any() else k)
        if k == 0:
            return
        part = np.ascontiguousarray(cmds[:k])
        eng.feed(part)
        want = events[events["seq"] <= part["seq"][-1]] if k < len(cmds) else events
        if eng.events_view().tobytes() != want.tobytes():
            raise ReplayDiverged(int(part["seq"][0]))
        yield part, want
        if k < len(cmds):
            return


def replay(args) -> int:
    from engine import config as cfgmod, gateway
    from engine.server import engine_from_config
    try:
        cfg = cfgmod.load(args.config)
    except (cfgmod.ConfigError, OSError) as e:
        print(f"trading-engine journal: {e}", file=sys.stderr)
        return 2
    j = open_journal(args.path)
    until_seq, until_ns = None, None
    if args.until:
        if args.until.isdigit():
            until_seq = int(args.until)
        else:
            until_ns = parse_time(args.until)
    snap = None
    if args.compare_snapshot is not None:
        path = args.compare_snapshot or None
        if path is None:
            found = snapshot.list_snapshots(os.path.join(args.path, "snapshots"))
            if not found:
                print("trading-engine journal: no snapshot to compare with", file=sys.stderr)
                return 2
            path = found[0]
        try:
            snap = (path, *snapshot.read(path))
        except (snapshot.SnapshotError, OSError) as e:
            print(f"snapshot {path}: {e}", file=sys.stderr)
            return 1
        until_seq = snap[1]
    eng = engine_from_config(cfg)
    e = cfg.engine
    next_seq = np.ones(e.max_accounts, dtype=np.int64)
    hot = gateway.Hot(eng, next_seq, 1, False)      # the live encoder, for the report numbering only
    commands = events_n = 0
    last_seq, last_ts = 0, None
    t = time.perf_counter()
    try:
        for part, want in replayed(j, eng, until_seq, until_ns):
            hot.encode()                  # advances next_seq as the server did
            hot.discard()
            commands += len(part)
            events_n += len(want)
            last_seq, last_ts = int(part["seq"][-1]), int(part["ts_ns"][-1])
    except ReplayDiverged as e:
        print(f"replay DIVERGED from the journal at seq {e.seq} (is --config the server's config?)", file=sys.stderr)
        return 1
    finally:
        j.env.close()
    dt_s = time.perf_counter() - t
    print(f"replay: {commands} commands, {events_n} events in {dt_s:.3f} s: "
          f"{events_n / dt_s if dt_s else 0:,.0f} events/s, {commands / dt_s if dt_s else 0:,.0f} commands/s",
          file=sys.stderr)
    print(f"replayed {commands} commands ({events_n} events) to seq {last_seq}"
          + (f", {format_time(last_ts)}" if last_ts is not None else ""))
    print(f"state_hash {eng.state_hash():#018x}")
    show_state(eng, cfg, next_seq, args)
    if snap is not None:
        path, s_seq, state, _ = snap
        other = engine_from_config(cfg)
        other.import_state(state)
        same = other.state_hash() == eng.state_hash() and last_seq == s_seq
        seqs = state.get("server.next_seq")
        same_seqs = seqs is None or np.array_equal(seqs, next_seq)
        print(f"snapshot {os.path.basename(path)} at seq {s_seq}: state_hash {other.state_hash():#018x}, "
              f"{'EQUAL' if same else 'DIFFERS'}; report sequences {'equal' if same_seqs else 'DIFFER'}")
        return 0 if same and same_seqs else 1
    return 0


def _units(v: int, decimals: int) -> str:
    """Integer units as a decimal string, without floats."""
    if decimals == 0:
        return str(v)
    sign = "-" if v < 0 else ""
    whole, frac = divmod(abs(v), 10**decimals)
    return f"{sign}{whole}.{frac:0{decimals}d}"


def show_state(eng, cfg, next_seq, args):
    for s in cfg.symbols:
        if args.symbol is not None and s.id != args.symbol:
            continue
        bids, asks = eng.depth(s.id, args.depth)
        last = eng.last_price(s.id)
        print(f"\n{s.name} (symbol {s.id}): {_name(SymbolState, eng.symbol_state(s.id))}, last price "
              f"{_units(last, s.price_decimals) if last is not None else '-'}")
        print(f"  {'bid orders':>10} {'bid qty':>14} {'bid':>14} | {'ask':<14} {'ask qty':<14} {'ask orders':<10}")
        for i in range(max(len(bids), len(asks))):
            b = bids[i] if i < len(bids) else None
            a = asks[i] if i < len(asks) else None
            left = f"{b[2]:>10} {_units(b[1], s.qty_decimals):>14} {_units(b[0], s.price_decimals):>14}" if b else \
                " " * 40
            right = f"{_units(a[0], s.price_decimals):<14} {_units(a[1], s.qty_decimals):<14} {a[2]:<10}" if a else ""
            print(f"  {left} | {right}".rstrip())
    names = {s.id: s for s in cfg.symbols}
    # every account the journal defines: the config's and those added at run time (ADD_ACCOUNT)
    accounts = [int(a) for a in np.nonzero(eng.acct_arr["defined"])[0] if args.account in (None, int(a))]
    print(f"\nopen orders ({eng.live_orders} in all)")
    print(f"  {'order_id':>9} {'acct':>5} {'clid':>9} {'symbol':<10} {'side':<5} {'type':<10} {'tif':<4} "
          f"{'state':<11} {'price':>14} {'stop':>14} {'leaves':>14} {'shown':>14} {'filled':>14}")
    for a in accounts:
        for o in eng.open_orders(a):
            s = names.get(o["symbol"])
            pd, qd = (s.price_decimals, s.qty_decimals) if s else (0, 0)
            print(f"  {o['order_id']:>9} {a:>5} {o['client_order_id']:>9} {s.name if s else o['symbol']:<10} "
                  f"{_name(Side, o['side']):<5} {_name(OrderType, o['order_type']):<10} "
                  f"{_name(TimeInForce, o['tif']):<4} {_name(OrderState, o['state']):<11} "
                  f"{_units(o['price'], pd):>14} {_units(o['stop_price'], pd):>14} {_units(o['leaves'], qd):>14} "
                  f"{_units(o['shown'], qd):>14} {_units(o['filled'], qd):>14}")
    print("\nnext report seq per account: " + " ".join(f"{a}:{int(next_seq[a])}" for a in accounts))


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The journal tool's actions and options, added to `p` (its own parser or the
    `trading-engine journal` subcommand's)."""
    sub = p.add_subparsers(dest="action", required=True)
    for name in ("stats", "verify"):
        sub.add_parser(name).add_argument("path")
    d = sub.add_parser("dump", help="records, filtered, as a table, JSON lines or CSV")
    d.add_argument("path")
    d.add_argument("--from-seq", type=int)
    d.add_argument("--to-seq", type=int)
    d.add_argument("--since", help="receive time: ISO 8601 (UTC unless given) or ns since the epoch")
    d.add_argument("--until", help="receive time: ISO 8601 or ns")
    d.add_argument("--account", type=int)
    d.add_argument("--symbol", help="symbol name (from --config) or id")
    d.add_argument("--order-id", type=int)
    d.add_argument("--operator", type=int, help="admin commands of this operator id ([[admins]]), with their events")
    d.add_argument("--event-type", help="comma-separated command or event kinds: new_order,fill,...")
    d.add_argument("--format", choices=["table", "jsonl", "csv"], default="table")
    a = sub.add_parser("audit", help="the life of one order")
    a.add_argument("path")
    a.add_argument("order_id", type=int)
    a.add_argument("--format", choices=["table", "jsonl", "csv"], default="table")
    for x in (d, a):
        x.add_argument("--config", help="the server's config, for symbol names and units (default: the embedded "
                                        "demo config): they are not in the journal")
        x.add_argument("--raw", action="store_true", help="the journal's integers: units and symbol ids")
    r = sub.add_parser("replay", help="rebuild the state at a point; books and open orders")
    r.add_argument("path")
    r.add_argument("--config", help="the server's config (default: the embedded demo config): the engine's "
                                    "capacities, symbols and accounts are not in the journal")
    r.add_argument("--until", help="a command seq (an integer), or a receive time: ISO 8601, or @NS (ns since "
                                   "the epoch)")
    r.add_argument("--compare-snapshot", nargs="?", const="", metavar="FILE",
                   help="replay to a snapshot's seq and compare state_hash (default: the newest snapshot)")
    r.add_argument("--depth", type=int, default=10, help="book levels per side")
    r.add_argument("--account", type=int, help="open orders of this account only")
    r.add_argument("--symbol", type=int, help="this symbol's book only")
    for action in sub.choices.values():
        action.add_argument("--key-file", help="a keyed journal's key, from this owner-only file")
        action.add_argument("--key-env", help="a keyed journal's key, from this environment variable")
    p.set_defaults(run=run)
    return p


def parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="trading-engine journal", description=__doc__,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter))


def run(args) -> int:
    """Run the parsed action."""
    global JOURNAL_KEY
    try:
        JOURNAL_KEY = cfgmod.journal_key(cfgmod.JournalConfig(key_file=args.key_file, key_env=args.key_env))
    except cfgmod.ConfigError as e:
        print(f"trading-engine journal: {e}", file=sys.stderr)
        return 2
    try:
        if args.action in ("stats", "verify"):
            return stats(args)
        return {"dump": dump, "audit": audit, "replay": replay}[args.action](args)
    except JournalError as e:           # verify's verdict, and every other action's refusal
        print(f"journal DAMAGED: first bad seq {e.seq}: {e}" if e.seq is not None else f"journal DAMAGED: {e}")
        return 1
    except JournalRefused as e:         # a keyed journal without its key (or with another)
        print(f"trading-engine journal: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:             # `... | head`: the reader went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def main(argv=None) -> int:
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
