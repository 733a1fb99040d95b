"""`trading-engine report positions|audit|tca JOURNAL_PATH --config FILE`: compliance reports from the journal.

    report positions JOURNAL_PATH --config FILE [--until SEQ] [--format csv|json] [--raw]
        end-of-day positions per account and symbol (the engine's own figures after replaying the journal
        to --until, default its end), each with the symbol's large-trader threshold (LARGE_POSITION_QTY in
        force for the account) and whether the position is above it
    report audit JOURNAL_PATH --config FILE [--until SEQ] [--events|--dispositions] [--format csv|json] [--raw]
                 [--format parquet --out FILE]
        every order's lifecycle rebuilt from the journal: one row per order (submitted, accepted or
        rejected, amends, fills, how it ended) or, with --events, one row per event of an order; with
        --dispositions, one row per alert disposition (operator, decision, note: engine/notes.py); Parquet:
        the same rows in typed columns (PARQUET below; pyarrow, the `parquet` extra)
    report tca JOURNAL_PATH --config FILE [--until SEQ] [--format csv|json] [--html FILE]
        transaction cost analysis per account, strategy and execution algorithm (engine/SURVEILLANCE.md
        "Reports"); --html: one self-contained HTML file with the same figures and PNG plots (matplotlib,
        the `reports` extra: engine/tcareport.py)

Like `journal replay` and `risk`, it opens the journal read-only beside the server and replays it into a
fresh engine (journal_tool.replayed checks every event against the journal); nothing reads the wall
clock. Prices and quantities are in the symbol's decimals and cash in risk.cash_decimals (Decimal
strings), or the journal's integers with --raw; the TCA figures are basis points (floats: analytics, not
the order path).
"""
from __future__ import annotations

import argparse
import bisect
import csv
import sys

import msgspec
import numpy as np

from engine import config as cfgmod
from engine import notes
from engine.journal_tool import _name
from protocol.codes import (AlertType, AlgoKind, CancelReason, CommandKind, Disposition, EventFlag, EventKind,
                            LimitKind, OrderType, Reject, Side, TimeInForce)
from protocol.units import from_units

HORIZONS_S = (1, 10, 60)          # markouts
ARRIVAL_KINDS = (CommandKind.NEW_ORDER, CommandKind.ALGO_NEW)     # the book's mid is noted before these


class Replay:
    """The journal replayed into a fresh engine, command by command (so the book is known before each
    order: its arrival mid), with each symbol's mid after every command that touched it."""

    def __init__(self, args):
        from engine import journal_tool
        from engine.server import engine_from_config
        self.cfg = cfgmod.load(args.config)
        journal_tool.JOURNAL_KEY = cfgmod.journal_key(self.cfg.journal)
        self.symbols = {s.id: s for s in self.cfg.symbols}
        self.eng = engine_from_config(self.cfg)
        self.j = journal_tool.open_journal(args.path)
        self.path = args.path
        self.until = args.until
        self.mids = {s: ([], []) for s in self.symbols}           # symbol -> (ts list, mid list)

    def mid(self, sym):
        bids, asks = self.eng.depth(sym, 1)
        if bids and asks:
            return (bids[0][0] + asks[0][0]) / 2
        return None

    def run(self, on_command=None):
        """Feed every command; on_command(cmd, events, arrival_mid) after each."""
        from engine.journal_tool import ReplayDiverged
        eng = self.eng
        try:
            for cmds, events in self.j.batches(to_seq=self.until):
                k = len(cmds) if self.until is None else int(np.searchsorted(cmds["seq"], self.until, side="right"))
                if k == 0:
                    break
                evseq = events["seq"]
                for i in range(k):
                    c = cmds[i:i + 1]
                    sym = int(c["symbol"][0])
                    arrival = self.mid(sym) if int(c["kind"][0]) in ARRIVAL_KINDS and sym in self.symbols \
                        else None
                    n0 = eng.events_view().shape[0]
                    eng.feed(np.ascontiguousarray(c))
                    mine = eng.events_view()[n0:]
                    seq = int(c["seq"][0])
                    lo, hi = np.searchsorted(evseq, [seq, seq + 1])
                    if mine.tobytes() != events[lo:hi].tobytes():
                        raise ReplayDiverged(seq)
                    for s in ([sym] if sym in self.symbols else list(self.symbols)):
                        m = self.mid(s)
                        ts_l, mid_l = self.mids[s]
                        if m is not None and (not mid_l or mid_l[-1] != m):
                            ts_l.append(int(c["ts_ns"][0]))
                            mid_l.append(m)
                    if on_command is not None:
                        on_command(c[0], mine.copy(), arrival)
                eng.clear_events()
                if k < len(cmds):
                    break
        finally:
            self.j.env.close()

    def mid_at(self, sym, ts):
        """The symbol's mid in force at ts (after the last command at or before it), or None."""
        ts_l, mid_l = self.mids[sym]
        i = bisect.bisect_right(ts_l, ts)
        return mid_l[i - 1] if i else None


# -- positions --

def positions_rows(rp: Replay, raw: bool):
    risk = rp.eng.risk
    if risk is None:
        raise SystemExit("trading-engine report: positions need [risk] enabled (the engine keeps no positions)")
    names = {a.id: a.name for a in rp.cfg.accounts}
    cash = (lambda v: v) if raw else (lambda v: from_units(v, risk.cash_decimals))    # noqa: E731
    for a in (int(x) for x in np.nonzero(rp.eng.acct_arr["defined"])[0]):
        for p in risk.positions(a):
            s = rp.symbols[p["symbol"]]
            px = (lambda v: v) if raw else (lambda v: from_units(v, s.price_decimals))   # noqa: E731
            qt = (lambda v: v) if raw else (lambda v: from_units(v, s.qty_decimals))     # noqa: E731
            thr = risk.effective(int(LimitKind.LARGE_POSITION_QTY), a, s.id)
            yield dict(account=a, account_name=names.get(a, str(a)), symbol=s.name, position=qt(p["position"]),
                       avg_price=px(p["avg_price"]), mark=px(p["mark"]), open_buy=qt(p["open_buy"]),
                       open_sell=qt(p["open_sell"]), realized=cash(p["realized"]), fees=cash(p["fees"]),
                       unrealized=cash(p["unrealized"]), exposure=cash(p["exposure"]),
                       large_threshold="" if thr is None else qt(thr),
                       large=thr is not None and abs(p["position"]) > thr)


# -- audit: each order's lifecycle --

class Audit:
    """Orders by order id (rejected NEW_ORDERs keyed by (account, client order id)), built from the
    commands and events as they are replayed."""

    def __init__(self, rp: Replay, raw: bool):
        self.rp, self.raw = rp, raw
        self.orders: dict = {}
        self.events: list[dict] = []
        self.dispositions: list[dict] = []              # ALERT_DISPOSITIONs (`audit --dispositions`)
        self.admins = {a.id: a.name for a in rp.cfg.admins}
        self.notes = notes.load(rp.path)
        self.parents: dict[int, dict] = {}              # execution algorithms' parent orders by parent id
        self.parent_of: dict[tuple[int, int], dict] = {}    # (account, client order id) -> parent

    def px(self, sym, v):
        s = self.rp.symbols.get(sym)
        return v if self.raw or s is None else from_units(v, s.price_decimals)

    def qt(self, sym, v):
        s = self.rp.symbols.get(sym)
        return v if self.raw or s is None else from_units(v, s.qty_decimals)

    def on_command(self, c, events, arrival):
        kind = int(c["kind"])
        seq, ts = int(c["seq"]), int(c["ts_ns"])
        for e in events:
            ek = int(e["kind"])
            if ek == EventKind.ALGO_ACCEPTED:          # a parent (engine/ALGOS.md): its children follow
                pid, acct = int(e["order_id"]), int(e["account"])
                self.parents[pid] = self.parent_of[(acct, int(e["client_order_id"]))] = dict(
                    parent_id=pid, account=acct, strategy=int(c["strategy"]),
                    algo=_name(AlgoKind, int(c["order_type"])), _sym=int(e["symbol"]), _side=int(e["side"]),
                    _qty=int(e["leaves"]), submitted_ts_ns=ts, _arrival=arrival)
                continue
            if ek == EventKind.ALGO_AMENDED and int(e["order_id"]) in self.parents:
                self.parents[int(e["order_id"])]["_qty"] = int(e["qty"]) + int(e["leaves"])   # the new total
                continue
            if ek == EventKind.ALERT_DISPOSITION:        # a compliance decision, with its note (engine/notes.py)
                hexd = notes.hexdigest(int(e["price"]), int(e["leaves"]))
                op = int(c["operator"])
                self.dispositions.append(dict(
                    seq=seq, ts_ns=ts, operator=op, operator_name=self.admins.get(op, ""),
                    alert=f"{_name(AlertType, int(e['reason']))}:{int(e['order_id'])}:{int(e['qty'])}",
                    disposition=_name(Disposition, int(e["side"])), note_digest=hexd,
                    note=self.notes.get(hexd, "") if hexd else "", note_found=bool(hexd) and hexd in self.notes))
                continue
            if ek == EventKind.REJECTED and kind == CommandKind.NEW_ORDER:
                self.orders[("rejected", seq)] = self.new_row(c, 0, seq, ts, arrival) | {
                    "status": "rejected", "end_reason": _name(Reject, int(e["reason"])), "last_seq": seq,
                    "last_ts_ns": ts}
                continue
            sides = [(int(e["order_id"]), int(e["account"]), int(e["leaves"]), int(e["fee"]))]
            if ek == EventKind.FILL:
                sides.append((int(e["other_order_id"]), int(e["other_account"]), int(e["other_leaves"]),
                              int(e["other_fee"])))
            for k, (oid, acct, leaves, fee) in enumerate(sides):
                if oid == 0 or ek not in (EventKind.ACCEPTED, EventKind.FILL, EventKind.CANCELLED,
                                          EventKind.REPLACED, EventKind.TRIGGERED, EventKind.RESTATED):
                    continue
                o = self.orders.get(oid)
                if ek == EventKind.ACCEPTED and o is None:
                    o = self.orders[oid] = self.new_row(c if kind == CommandKind.NEW_ORDER else None, oid, seq, ts,
                                                        arrival, e)
                    if int(e["flags"]) & EventFlag.ALGO_CHILD:     # a child: its parent's strategy, and the id
                        parent = self.parent_of.get((acct, int(e["client_order_id"])))
                        if parent is not None:
                            o["parent_id"], o["strategy"] = parent["parent_id"], parent["strategy"]
                if o is None:
                    continue
                o["last_seq"], o["last_ts_ns"] = seq, ts
                self.events.append(dict(order_id=oid, account=acct, seq=seq, ts_ns=ts, event=_name(EventKind, ek),
                                        symbol=o["symbol"], side=o["side"], price=self.px(o["_sym"], int(e["price"])),
                                        qty=self.qt(o["_sym"], int(e["qty"])), leaves=self.qt(o["_sym"], leaves),
                                        reason=_name(CancelReason, int(e["reason"])) if ek == EventKind.CANCELLED
                                        else "", trade_id=int(e["trade_id"]) if ek == EventKind.FILL else "",
                                        liquidity=("taker" if k == 0 else "maker") if ek == EventKind.FILL else "",
                                        counterparty=(int(e["other_account"]) if k == 0 else int(e["account"]))
                                        if ek == EventKind.FILL else ""))
                if ek == EventKind.FILL:
                    q, p = int(e["qty"]), int(e["price"])
                    o["_filled"] += q
                    o["_notional"] += p * q
                    o["_fees"] += fee
                    o["fills"] += 1
                    o["_fill_list"].append((ts, p, q))
                    if leaves == 0:
                        o["status"] = "filled"
                elif ek == EventKind.CANCELLED:
                    o["status"] = "cancelled"
                    o["end_reason"] = _name(CancelReason, int(e["reason"]))
                elif ek == EventKind.REPLACED:
                    o["amends"] += 1
                elif ek == EventKind.TRIGGERED:
                    o["triggered_seq"] = seq

    def new_row(self, c, oid, seq, ts, arrival, e=None):
        src = c if c is not None else e
        sym = int(src["symbol"])
        s = self.rp.symbols.get(sym)
        return dict(order_id=oid, account=int(src["account"]), client_order_id=int(src["client_order_id"]),
                    symbol=s.name if s else sym, side=_name(Side, int(src["side"])),
                    order_type=_name(OrderType, int(c["order_type"])) if c is not None else "",
                    tif=_name(TimeInForce, int(c["tif"])) if c is not None else "",
                    strategy=int(c["strategy"]) if c is not None else 0, parent_id=0,
                    price=self.px(sym, int(src["price"])), qty=self.qt(sym, int(src["qty"])),
                    submitted_seq=seq, submitted_ts_ns=ts, status="open", end_reason="", amends=0, fills=0,
                    filled_qty=0, avg_fill_price="", fees=0, triggered_seq="", last_seq=seq, last_ts_ns=ts,
                    _sym=sym, _qty=int(src["qty"]), _side=int(src["side"]), _filled=0, _notional=0, _fees=0,
                    _fill_list=[], _arrival=arrival)

    def order_rows(self, notional: bool = False):
        """One row per order; notional: the exact filled notional (sum of price x qty, the journal's units)
        instead of the average fill price (Parquet: a typed column rather than a ratio)."""
        cd = self.rp.cfg.risk.cash_decimals
        for o in self.orders.values():
            row = {k: v for k, v in o.items() if not k.startswith("_")}
            row["filled_qty"] = self.qt(o["_sym"], o["_filled"])
            row["fees"] = o["_fees"] if self.raw else from_units(o["_fees"], cd)
            if notional:
                del row["avg_fill_price"]
                row["filled_notional"] = o["_notional"]
            elif o["_filled"]:
                avg = o["_notional"] / o["_filled"]         # a report figure (exact in --raw as a ratio below)
                row["avg_fill_price"] = f"{o['_notional']}/{o['_filled']}" if self.raw else \
                    round(avg / 10 ** self.rp.symbols[o["_sym"]].price_decimals, 10)
            yield row


# -- TCA --

def tca_units(rp: Replay, audit: Audit) -> list[dict]:
    """The units TCA measures, each with its own figures: an order placed directly (not rejected), or an
    execution algorithm's parent order with its children's fills (a child is measured in its parent only:
    the parent's arrival, quantity and interval). Weighted sums (bps x executed qty) and their weights, so
    groups add up exactly as tca_rows does."""
    units = []
    children: dict[int, list] = {}
    for o in audit.orders.values():
        if o["status"] == "rejected" or o["order_id"] == 0:
            continue
        if o["parent_id"]:
            children.setdefault(o["parent_id"], []).append(o)
            continue
        units.append(dict(account=o["account"], strategy=o["strategy"], algo="", id=o["order_id"],
                          sym=o["_sym"], side=o["_side"], ordered=o["_qty"], start=o["submitted_ts_ns"],
                          arrival=o["_arrival"], fills=o["_fill_list"]))
    for pid, p in audit.parents.items():
        fills = sorted((f for ch in children.get(pid, ()) for f in ch["_fill_list"]), key=lambda f: f[0])
        units.append(dict(account=p["account"], strategy=p["strategy"], algo=p["algo"], id=pid, sym=p["_sym"],
                          side=p["_side"], ordered=p["_qty"], start=p["submitted_ts_ns"], arrival=p["_arrival"],
                          fills=fills))
    for u in units:
        filled = sum(q for _, _, q in u["fills"])
        u.update(filled=filled, is_w=0.0, is_q=0, vw_w=0.0, vw_q=0, mk={h: [0.0, 0] for h in HORIZONS_S},
                 shortfall_bps=None)
        if not filled:
            continue
        sign = 1 if u["side"] == Side.BUY else -1
        avg = sum(p * q for _, p, q in u["fills"]) / filled
        if u["arrival"]:
            u["shortfall_bps"] = sign * (avg - u["arrival"]) / u["arrival"] * 1e4
            u["is_w"], u["is_q"] = u["shortfall_bps"] * filled, filled
        start, end = u["start"], u["fills"][-1][0]
        ts_l, px_l, q_l = rp.tape[u["sym"]]
        lo, hi = bisect.bisect_left(ts_l, start), bisect.bisect_right(ts_l, end)
        vq = sum(q_l[lo:hi])
        if vq:
            vwap = sum(p * q for p, q in zip(px_l[lo:hi], q_l[lo:hi])) / vq
            u["vw_w"], u["vw_q"] = sign * (avg - vwap) / vwap * 1e4 * filled, filled
        for ts, p, q in u["fills"]:
            for h in HORIZONS_S:
                m = rp.mid_at(u["sym"], ts + h * 10**9)
                if m is not None:
                    u["mk"][h][0] += sign * (m - p) / p * 1e4 * q
                    u["mk"][h][1] += q
    return units


def tca_rows(units: list[dict]):
    """Per account, strategy and algorithm ("" = orders placed directly; an algorithm's unit is its parent
    order), over the units that filled (executed qty weights):
    - implementation shortfall vs arrival (bps): side x (average fill price - arrival mid) / arrival mid,
      the arrival mid being the book's mid when the NEW_ORDER (ALGO_NEW) arrived (units without a two-sided
      book at arrival are left out of this figure);
    - slippage vs interval VWAP (bps): side x (average fill - VWAP of every trade in the symbol from the
      unit's arrival to its last fill) / VWAP;
    - markouts at 1 s / 10 s / 60 s (bps): side x (mid h after each fill - fill price) / fill price, the
      mid in force then (positive: the price moved the order's way after it traded);
    - fill ratios: filled qty / ordered qty (a parent's total), and units with a fill / units."""
    groups: dict[tuple[int, int, str], dict] = {}
    for u in units:
        g = groups.setdefault((u["account"], u["strategy"], u["algo"]),
                              dict(orders=0, with_fill=0, ordered=0, filled=0, is_w=0.0, is_q=0, vw_w=0.0, vw_q=0,
                                   mk={h: [0.0, 0] for h in HORIZONS_S}))
        g["orders"] += 1
        g["ordered"] += u["ordered"]
        if not u["filled"]:
            continue
        g["with_fill"] += 1
        g["filled"] += u["filled"]
        for k in ("is_w", "is_q", "vw_w", "vw_q"):
            g[k] += u[k]
        for h in HORIZONS_S:
            g["mk"][h][0] += u["mk"][h][0]
            g["mk"][h][1] += u["mk"][h][1]
    for (acct, strat, algo), g in sorted(groups.items()):
        row = dict(account=acct, strategy=strat, algo=algo, orders=g["orders"], orders_with_fill=g["with_fill"],
                   fill_ratio_qty=round(g["filled"] / g["ordered"], 6) if g["ordered"] else None,
                   fill_ratio_orders=round(g["with_fill"] / g["orders"], 6),
                   shortfall_bps=round(g["is_w"] / g["is_q"], 4) if g["is_q"] else None,
                   vwap_slippage_bps=round(g["vw_w"] / g["vw_q"], 4) if g["vw_q"] else None)
        for h in HORIZONS_S:
            w, q = g["mk"][h]
            row[f"markout_{h}s_bps"] = round(w / q, 4) if q else None
        yield row


# Parquet (`report audit --format parquet --out FILE`): the journal's integers (as --raw) in typed columns,
# one schema per row kind, kept in step with the rows (write_parquet refuses a row with other columns).
# u64: ids and seqs as the journal holds them; i64: prices (ticks), quantities (lots), cash, times (ns
# since the epoch); dec: an exact decimal128(38, 0) (a notional can pass int64).
PARQUET = {
    "orders": dict(order_id="u64", account="i64", client_order_id="u64", symbol="str", side="str",
                   order_type="str", tif="str", strategy="i64", parent_id="u64", price="i64", qty="i64",
                   submitted_seq="u64", submitted_ts_ns="i64", status="str", end_reason="str", amends="i64",
                   fills="i64", filled_qty="i64", filled_notional="dec", fees="i64", triggered_seq="u64",
                   last_seq="u64", last_ts_ns="i64"),
    "events": dict(order_id="u64", account="i64", seq="u64", ts_ns="i64", event="str", symbol="str", side="str",
                   price="i64", qty="i64", leaves="i64", reason="str", trade_id="u64", liquidity="str",
                   counterparty="i64"),
    "dispositions": dict(seq="u64", ts_ns="i64", operator="i64", operator_name="str", alert="str",
                         disposition="str", note_digest="str", note="str", note_found="bool"),
}


def write_parquet(rows, kind: str, path: str) -> int:
    import pyarrow as pa                  # here only: the `parquet` extra
    import pyarrow.parquet as pq
    types = {"u64": pa.uint64(), "i64": pa.int64(), "str": pa.string(), "bool": pa.bool_(),
             "dec": pa.decimal128(38, 0)}
    cols = PARQUET[kind]
    data: dict[str, list] = {k: [] for k in cols}
    for r in rows:
        if r.keys() != cols.keys():
            raise AssertionError(f"report audit: the {kind} row's columns differ from the Parquet schema")
        for k, v in r.items():
            data[k].append(None if v == "" and cols[k] != "str" else v)
    schema = pa.schema([(k, types[t]) for k, t in cols.items()])
    table = pa.table(data, schema=schema)
    pq.write_table(table, path)
    return table.num_rows


def write(rows, fmt: str, out=None) -> int:
    out = out or sys.stdout
    n = 0
    w = None
    for r in rows:
        if fmt == "json":
            out.write(msgspec.json.encode(r).decode() + "\n")
        else:
            if w is None:
                w = csv.DictWriter(out, fieldnames=list(r))
                w.writeheader()
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        n += 1
    return n


def emit(rows, args) -> int:
    """CSV or JSON lines to --out, else stdout."""
    if args.out is None:
        return write(rows, args.format)
    with open(args.out, "w", newline="") as f:
        return write(rows, args.format, f)


def run(args) -> int:
    if args.html is not None and args.report != "tca":
        print("trading-engine report: --html is for `report tca`", file=sys.stderr)
        return 2
    if args.format == "parquet":
        if args.report != "audit" or args.out is None:
            print("trading-engine report: --format parquet is for `report audit ... --out FILE`", file=sys.stderr)
            return 2
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            print("trading-engine report: --format parquet needs pyarrow: pip install 'trading-engine[parquet]'",
                  file=sys.stderr)
            return 2
    if args.html is not None:
        try:
            from engine import tcareport            # matplotlib, here only (the `reports` extra)
        except ImportError:
            print("trading-engine report: --html needs matplotlib: pip install 'trading-engine[reports]'",
                  file=sys.stderr)
            return 2
    try:
        rp = Replay(args)
    except (cfgmod.ConfigError, OSError) as e:
        print(f"trading-engine report: {e}", file=sys.stderr)
        return 2
    if args.report == "positions":
        rp.run()
        n = emit(positions_rows(rp, args.raw), args)
    else:
        audit = Audit(rp, args.raw or args.format == "parquet" if args.report == "audit" else True)
        tape: dict[int, tuple[list, list, list]] = {s: ([], [], []) for s in rp.symbols}

        def on_command(c, events, arrival):
            audit.on_command(c, events, arrival)
            for e in events:
                if int(e["kind"]) == EventKind.FILL and int(e["symbol"]) in tape:
                    t = tape[int(e["symbol"])]
                    t[0].append(int(e["ts_ns"]))
                    t[1].append(int(e["price"]))
                    t[2].append(int(e["qty"]))
        rp.run(on_command)
        rp.tape = tape
        if args.report == "audit":
            kind = "dispositions" if args.dispositions else "events" if args.events else "orders"
            rows = audit.dispositions if args.dispositions else audit.events if args.events else \
                audit.order_rows(notional=args.format == "parquet")
            n = write_parquet(rows, kind, args.out) if args.format == "parquet" else emit(rows, args)
        elif args.html is not None:
            units = tca_units(rp, audit)
            rows = list(tca_rows(units))
            with open(args.html, "w") as f:
                f.write(tcareport.render(rows, units, {a.id: a.name for a in rp.cfg.accounts},
                                         f"Transaction cost analysis: {args.path}"
                                         + (f" to seq {args.until}" if args.until else "")))
            n = len(rows)
        else:
            n = emit(tca_rows(tca_units(rp, audit)), args)
    print(f"report {args.report}: {n} rows", file=sys.stderr)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("report", choices=("positions", "audit", "tca"))
    p.add_argument("path", metavar="JOURNAL_PATH")
    p.add_argument("--config", required=True, help="the server's config (symbols, accounts, risk, journal key)")
    p.add_argument("--until", type=int, help="replay up to this command seq (default: the journal's end)")
    p.add_argument("--format", choices=("csv", "json", "parquet"), default="csv",
                   help="parquet: audit only, to --out, the journal's integers in typed columns (the `parquet` extra)")
    p.add_argument("--out", metavar="FILE", help="write to FILE (parquet: required)")
    p.add_argument("--raw", action="store_true", help="the journal's integers instead of human units")
    p.add_argument("--events", action="store_true", help="audit: one row per order event")
    p.add_argument("--dispositions", action="store_true",
                   help="audit: one row per alert disposition (operator, decision, note)")
    p.add_argument("--html", metavar="FILE",
                   help="tca: write one HTML file with the figures and PNG plots (needs the `reports` extra)")
    p.set_defaults(run=run)
    return p
