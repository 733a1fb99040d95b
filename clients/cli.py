"""`trading-engine order|cancel|book|orders|symbols|trades|watch|positions|portfolio`: the SDK from the
command line. add_commands() puts these commands into the `trading-engine` argparse tree
(engine/cli.py), each with the connection options (--host, --port, --account, --secret-file,
--tls, --cafile, each with an environment default) and --json for scripts.

The secret comes from the TRADING_ENGINE_SECRET environment variable or from
--secret-file (readable by its owner only), never from the command line.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from clients.client import (Client, ExecutionReport, MarketUpdate, OrderInfo, Position, TopOfBook, Trade,
                            TradeSummary)


class UsageError(Exception):
    """A command line that cannot run (no secret, a bad secret file): one line, exit code 2."""


def _secret(args: argparse.Namespace) -> str:
    if args.secret_file:
        p = Path(args.secret_file)
        try:
            if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise UsageError(f"{p}: must be readable by its owner only (chmod 600)")
            return p.read_text().strip()
        except OSError as e:
            raise UsageError(f"--secret-file {p}: {e.strerror}") from None
    value = os.environ.get("TRADING_ENGINE_SECRET")
    if not value:
        raise UsageError("set TRADING_ENGINE_SECRET or pass --secret-file FILE")
    return value


def _tls(args: argparse.Namespace) -> bool | ssl.SSLContext:
    if args.cafile:
        try:
            return ssl.create_default_context(cafile=args.cafile)
        except OSError as e:
            raise UsageError(f"--cafile {args.cafile}: {e.strerror or e}") from None
    return bool(args.tls)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = "  ".join(f"{h:>{w}}" for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(f"{str(v):>{w}}" for v, w in zip(r, widths)))


def _clock(ns: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ns / 1e9)) + f".{ns % 1_000_000_000 // 1000:06d}"


def _side(price: Any, qty: Any, orders: int) -> str:
    return f"{qty} @ {price} ({orders})" if price is not None else "-"


def market_line(u: MarketUpdate) -> str:
    """One readable line (DEPTH: a few) per market-data update."""
    if isinstance(u, TopOfBook):
        halted = "  HALTED" if u.halted else ""
        return (f"{u.symbol}  top    bid {_side(u.bid, u.bid_qty, u.bid_orders)}   "
                f"ask {_side(u.ask, u.ask_qty, u.ask_orders)}   last {u.last if u.last is not None else '-'}"
                f"   seq {u.seq}{halted}")
    if isinstance(u, Trade):
        return f"{u.symbol}  trade  #{u.trade_id} {u.aggressor:<4} {u.qty} @ {u.price}   {_clock(u.time_ns)}   seq {u.seq}"
    if isinstance(u, TradeSummary):
        return (f"{u.symbol}  trades {u.count} conflated (#{u.first_trade_id}..#{u.last_trade_id}): volume {u.volume}, "
                f"high {u.high}, low {u.low}, last {u.last}   seq {u.seq}")
    lines = [f"{u.symbol}  depth  seq {u.seq}" + ("  HALTED" if u.halted else "")]
    for i in range(max(len(u.bids), len(u.asks))):
        b = u.bids[i] if i < len(u.bids) else None
        a = u.asks[i] if i < len(u.asks) else None
        left = f"{b.orders:>4} {b.qty:>14} {b.price:>14}" if b else " " * 34
        right = f"{a.price:<14} {a.qty:<14} {a.orders:<4}" if a else ""
        lines.append(f"    {left} | {right}".rstrip())
    return "\n".join(lines)


def _json(value: Any) -> int:
    print(msgspec.json.encode(value).decode(), flush=True)
    return 0


def _report_rows(reports: Sequence[ExecutionReport]) -> list[tuple[Any, ...]]:
    return [(r.kind, r.order_id, r.client_order_id, r.symbol, r.side or "", r.price, r.qty, r.leaves,
             r.reason or r.liquidity or "") for r in reports]


async def _placed(c: Client, first: ExecutionReport) -> list[ExecutionReport]:
    """The order's report and what happened to it at once (fills, an IOC remainder cancelled):
    the engine sends those in the same batch as the acceptance, so after one more round trip
    (an order-status query answered after them) they have all arrived."""
    if first.kind != "accepted":
        return [first]
    await c.order(order_id=first.order_id)
    return [first] + [r for r in c.received_reports()
                      if isinstance(r, ExecutionReport) and r.order_id == first.order_id and r.seq > first.seq]


def _shard_address(args: argparse.Namespace) -> tuple[str, int]:
    """--shards FILE: the address of the shard that owns the command's symbol (--host/--port otherwise)."""
    if not args.shards:
        return args.host, args.port
    from engine import config as cfgmod
    try:
        d = cfgmod.load_directory(args.shards)
    except cfgmod.ConfigError as e:
        raise UsageError(str(e)) from None
    symbol = getattr(args, "symbol", None)
    if args.command == "symbols":         # every shard has the whole symbol table
        return cfgmod.shard_address(d.shards[0].address)
    if symbol is None:
        raise UsageError(f"`{args.command}` with --shards needs a symbol (order ids are per shard: cancel --symbol S)")
    for s in d.shards:
        if symbol in s.symbols:
            return cfgmod.shard_address(s.address)
    raise UsageError(f"no shard of {args.shards} owns {symbol!r}")


def _show_orders(orders: Sequence[OrderInfo], args: argparse.Namespace) -> int:
    if args.json:
        return _json(orders)
    _table(["order id", "client id", "symbol", "side", "type", "tif", "price", "leaves", "filled", "state"],
           [(o.order_id, o.client_order_id, o.symbol, o.side, o.type, o.tif, o.price, o.leaves, o.filled,
             o.state) for o in orders])
    return 0


def _show_positions(positions: Sequence[Position], args: argparse.Namespace) -> int:
    if args.json:
        return _json(positions)
    _table(["symbol", "position", "avg price", "mark", "open buy", "open sell", "unrealized", "realized",
            "fees", "exposure", "init margin", "maint margin"],
           [(p.symbol, p.position, p.avg_price, p.mark, p.open_buy, p.open_sell, p.unrealized, p.realized,
             p.fees, p.exposure, p.initial_margin, p.maintenance_margin) for p in positions])
    return 0


async def _run(args: argparse.Namespace) -> int:
    if args.shards and args.command in ("orders", "positions"):      # every shard's, together
        from clients.sharded import ShardedClient
        async with ShardedClient.connect(args.shards, account=args.account, secret=_secret(args),
                                         tls=_tls(args)) as sc:
            if args.command == "orders":
                return _show_orders(await sc.open_orders(), args)
            return _show_positions(await sc.positions(), args)
    host, port = _shard_address(args)
    async with Client.connect(host, port, account=args.account, secret=_secret(args),
                              tls=_tls(args)) as c:
        if args.command == "symbols":
            syms = list(c.symbols_by_id.values())
            if args.json:
                return _json(syms)
            _table(["id", "symbol", "tick", "lot", "trading"],
                   [(s.id, s.name, s.price(s.tick_size), s.qty(s.lot_size), s.trading) for s in syms])
        elif args.command == "book":
            b = await c.book(args.symbol, args.depth)
            if args.json:
                return _json(b)
            rows = [(f"{x.orders}", f"{x.qty}", f"{x.price}", "", "", "") for x in b.bids]
            for i, x in enumerate(b.asks):
                if i < len(rows):
                    rows[i] = rows[i][:3] + (f"{x.price}", f"{x.qty}", f"{x.orders}")
                else:
                    rows.append(("", "", "", f"{x.price}", f"{x.qty}", f"{x.orders}"))
            print(b.symbol)
            _table(["orders", "bid qty", "bid", "ask", "ask qty", "orders"], rows)
        elif args.command == "orders":
            return _show_orders(await c.open_orders(), args)
        elif args.command == "order":
            r = await c.place(args.symbol, args.side, args.qty, price=args.price, type=args.type, tif=args.tif,
                              stop_price=args.stop_price, display_qty=args.display_qty, post_only=args.post_only,
                              reduce_only=args.reduce_only)
            reports = await _placed(c, r)
            if args.json:
                _json(reports)
            else:
                _table(["report", "order id", "client id", "symbol", "side", "price", "qty", "leaves", "reason"],
                       _report_rows(reports))
            return 0 if r.kind == "accepted" else 1
        elif args.command == "positions":
            return _show_positions(await c.positions(), args)
        elif args.command == "portfolio":
            pf = await c.portfolio()
            if args.json:
                return _json(pf)
            _table(["figure", "value"],
                   [("cash", pf.cash), ("equity", pf.equity), ("unrealized P&L", pf.unrealized),
                    ("realized P&L", pf.realized), ("fees", pf.fees), ("daily P&L", pf.daily_pnl),
                    ("exposure", pf.exposure), ("worst-case exposure", pf.worst_exposure),
                    ("initial margin", pf.initial_margin), ("maintenance margin", pf.maintenance_margin),
                    ("available", pf.available), ("leverage", "-" if pf.leverage is None else f"{pf.leverage}x"),
                    ("open orders", pf.open_orders), ("state", pf.state),
                    ("kill switch", "on" if pf.kill_switch else "off")])
        elif args.command == "trades":
            trades = await c.recent_trades(args.symbol, args.n)
            if args.json:
                return _json(trades)
            _table(["trade id", "time", "aggressor", "price", "qty"],
                   [(t.trade_id, _clock(t.time_ns), t.aggressor, t.price, t.qty) for t in trades])
        elif args.command == "watch":
            sub = await c.subscribe(args.symbol, top=True, depth=args.depth, trades=not args.no_trades)
            shown = 0
            async for update in sub:
                if args.json:            # JSON lines, each with its type
                    _json(dict(msgspec.structs.asdict(update), type=type(update).__name__))
                else:
                    print(market_line(update), flush=True)
                shown += 1
                if args.count and shown >= args.count:
                    break
        elif args.command == "algo":
            return await _algo(c, args)
        elif args.command == "cancel":
            r = await c.cancel(order_id=args.order_id)
            if args.json:
                _json(r)
            else:
                _table(["report", "order id", "qty", "reason"], [(r.kind, r.order_id, r.qty, r.reason or "")])
            return 0 if r.kind == "cancelled" else 1
    return 0


async def _algo(c: Client, args: argparse.Namespace) -> int:
    """trading-engine algo new|list|cancel|pause|resume|amend (engine/ALGOS.md)."""
    if args.action == "list":
        rows = await c.algos()
        if args.json:
            return _json(rows)
        _table(["parent", "client id", "symbol", "side", "algo", "state", "qty", "filled", "expected", "avg price",
                "limit", "slippage bps", "children"],
               [(a.parent_id, a.client_order_id, a.symbol, a.side, a.algo, a.state, a.qty, a.filled, a.expected,
                 a.avg_price or "", a.limit_price or "", a.slippage_bps, a.children) for a in rows])
        return 0
    if args.action == "new":
        r = await c.place_algo(args.symbol, args.side, args.qty, args.type, duration_ms=args.duration_ms,
                               limit_price=args.limit, slices=args.slices, randomization=args.randomization,
                               aggressiveness=args.aggressiveness, participation_rate=args.participation,
                               offset_ticks=args.offset_ticks, end_action=args.end, risk_aversion=args.risk_aversion,
                               volatility=args.volatility, impact=args.impact)
    elif args.action == "amend":
        mine = {a.parent_id: a for a in await c.algos()}
        if args.parent_id not in mine:
            r = await c.cancel_algo(args.parent_id)      # (answers UNKNOWN_ALGO)
        else:
            r = await c.amend_algo(args.parent_id, symbol=mine[args.parent_id].symbol, qty=args.qty,
                                   limit_price=args.limit, end=args.end_ns)
    else:
        r = await {"cancel": c.cancel_algo, "pause": c.pause_algo, "resume": c.resume_algo}[args.action](
            args.parent_id)
    if args.json:
        _json(r)
    elif isinstance(r, ExecutionReport):
        _table(["report", "client id", "reason"], [(r.kind, r.client_order_id, r.reason or "")])
    else:
        _table(["report", "parent", "client id", "symbol", "side", "filled", "leaves", "reason"],
               [(r.kind, r.parent_id, r.client_order_id, r.symbol, r.side, r.filled, r.leaves, r.reason or "")])
    return 1 if r.kind == "rejected" else 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise UsageError(f"{name}={value!r}: not an integer") from None


def connection_options() -> argparse.ArgumentParser:
    """The options every trading command takes (a parent parser), defaults from the environment."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--host", default=os.environ.get("TRADING_ENGINE_HOST", "127.0.0.1"),
                   help="the engine's host (TRADING_ENGINE_HOST, default 127.0.0.1)")
    g.add_argument("--port", type=int, default=_env_int("TRADING_ENGINE_PORT", 7001),
                   help="its trading port (TRADING_ENGINE_PORT, default 7001)")
    g.add_argument("--account", type=int, default=_env_int("TRADING_ENGINE_ACCOUNT", 1),
                   help="the account id (TRADING_ENGINE_ACCOUNT, default 1)")
    g.add_argument("--secret-file", default=os.environ.get("TRADING_ENGINE_SECRET_FILE"),
                   help="the account's secret, in an owner-only file (TRADING_ENGINE_SECRET_FILE; "
                        "else the secret itself from TRADING_ENGINE_SECRET)")
    g.add_argument("--tls", action="store_true", help="connect with TLS, verified against the system's CAs")
    g.add_argument("--cafile", help="connect with TLS, trusting this CA or self-signed certificate (PEM)")
    g.add_argument("--shards", default=os.environ.get("TRADING_ENGINE_SHARDS"),
                   help="a shard directory (TRADING_ENGINE_SHARDS; engine/SCALING.md): connect to the shard that "
                        "owns the command's symbol instead of --host/--port (orders, positions: every shard)")
    p.add_argument("--json", action="store_true", help="print JSON (watch: JSON lines) instead of tables")
    return p


def add_commands(sub: Any) -> None:
    """Add the trading commands to the `trading-engine` subcommands (`sub`, from add_subparsers)."""
    common = [connection_options()]

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help, parents=common)
        c.set_defaults(run=run)
        return c
    o = command("order", "place an order: order buy BTCUSDT 1.5 --price 45000.00; shows fills that happened at once")
    o.add_argument("side", choices=["buy", "sell"])
    o.add_argument("symbol")
    o.add_argument("qty")
    o.add_argument("--price", help="the limit price (none: give --type market, or --stop-price for a stop)")
    o.add_argument("--type", default=None, choices=["limit", "market", "stop", "stop_limit"],
                   help="default: limit with --price, stop with --stop-price, stop_limit with both")
    o.add_argument("--tif", default="gtc", choices=["gtc", "day", "ioc", "fok", "gtd"])
    o.add_argument("--stop-price")
    o.add_argument("--display-qty")
    o.add_argument("--post-only", action="store_true")
    o.add_argument("--reduce-only", action="store_true", help="may only reduce the account's position")
    c = command("cancel", "cancel an order by order id")
    c.add_argument("order_id", type=int)
    c.add_argument("--symbol", help="the order's symbol (with --shards: picks its shard)")
    b = command("book", "show a book")
    b.add_argument("symbol")
    b.add_argument("--depth", type=int, default=10)
    command("orders", "the account's open orders")
    command("symbols", "the symbol directory")
    command("positions", "the account's positions and P&L")
    command("portfolio", "the account's cash, equity, margin, leverage and state")
    t = command("trades", "a symbol's recent trades")
    t.add_argument("symbol")
    t.add_argument("-n", type=int, default=20, help="how many (default 20)")
    w = command("watch", "print a symbol's market data as it comes")
    w.add_argument("symbol")
    w.add_argument("--depth", type=int, default=5, help="levels per side (0 = top of book only)")
    w.add_argument("--no-trades", action="store_true")
    w.add_argument("--count", type=int, default=0, help="stop after this many updates (0 = until interrupted)")
    what = ("execution algorithms (engine/ALGOS.md): algo new buy BTCUSDT 10 --type twap --duration-ms 300000 "
            "--slices 10 --randomization 0.1; algo list; algo cancel|pause|resume|amend PARENT_ID")
    a = sub.add_parser("algo", help=what, description=what)      # (the options go after the action)
    a.set_defaults(run=run)
    acts = a.add_subparsers(dest="action", required=True)
    n = acts.add_parser("new", help="send a parent order", parents=common)
    n.add_argument("side", choices=["buy", "sell"])
    n.add_argument("symbol")
    n.add_argument("qty")
    n.add_argument("--type", default="twap", choices=["twap", "vwap", "is", "pov"])
    n.add_argument("--duration-ms", type=int, required=True, help="the window, from now")
    n.add_argument("--limit", help="no child worse than this price")
    n.add_argument("--slices", type=int, default=0, help="0 = the server's default")
    n.add_argument("--randomization", default="0", help="TWAP: fraction of a slice (0.1 = 10%%)")
    n.add_argument("--aggressiveness", default="0", help="share of each slice taken at the far touch (0..1)")
    n.add_argument("--participation", default="0", help="POV rate / VWAP cap, fraction of market volume")
    n.add_argument("--offset-ticks", type=int, default=0, help="passive children: ticks behind the touch")
    n.add_argument("--end", default="cancel", choices=["cancel", "sweep"], help="what happens to the rest")
    n.add_argument("--risk-aversion", type=int, default=0, help="IS: lambda, 1e-6 per bp")
    n.add_argument("--volatility", type=int, default=0, help="IS: sigma, 1/100 bp per sqrt(s)")
    n.add_argument("--impact", type=int, default=0, help="IS: eta, 1/100 bp s")
    acts.add_parser("list", help="the account's live parents", parents=common)
    for name in ("cancel", "pause", "resume"):
        x = acts.add_parser(name, help=f"{name} a parent", parents=common)
        x.add_argument("parent_id", type=int)
    m = acts.add_parser("amend", help="amend a parent's total, limit or end", parents=common)
    m.add_argument("parent_id", type=int)
    m.add_argument("--qty")
    m.add_argument("--limit")
    m.add_argument("--end-ns", type=int, help="new end, ns since the epoch")


def run(args: argparse.Namespace) -> int:
    """Run a parsed trading command: 0 done, 1 refused (a reject, a failed connection), 2 usage."""
    return asyncio.run(_run(args))

