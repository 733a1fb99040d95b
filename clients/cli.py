"""`trading-engine order|cancel|book|orders|symbols|trades|watch|positions|portfolio`: the SDK from the
command line.

The secret comes from the TRADING_ENGINE_SECRET environment variable or from
--secret-file (readable by its owner only), never from the command line.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
import time
from pathlib import Path

from clients.client import Client, ServerError, TopOfBook, Trade, TradeSummary


def _secret(args) -> str:
    if args.secret_file:
        p = Path(args.secret_file)
        if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SystemExit(f"{p}: must be readable by its owner only (chmod 600)")
        return p.read_text().strip()
    value = os.environ.get("TRADING_ENGINE_SECRET")
    if not value:
        raise SystemExit("set TRADING_ENGINE_SECRET or pass --secret-file")
    return value


def _table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = "  ".join(f"{h:>{w}}" for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(f"{str(v):>{w}}" for v, w in zip(r, widths)))


def _clock(ns: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ns / 1e9)) + f".{ns % 1_000_000_000 // 1000:06d}"


def _side(price, qty, orders) -> str:
    return f"{qty} @ {price} ({orders})" if price is not None else "-"


def market_line(u) -> str:
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


async def _run(args):
    async with Client.connect(args.host, args.port, account=args.account, secret=_secret(args)) as c:
        if args.command == "symbols":
            _table(["id", "symbol", "tick", "lot", "trading"],
                   [(s.id, s.name, s.price(s.tick_size), s.qty(s.lot_size), s.trading) for s in c.symbols_by_id.values()])
        elif args.command == "book":
            b = await c.book(args.symbol, args.depth)
            rows = [(f"{x.orders}", f"{x.qty}", f"{x.price}", "", "", "") for x in b.bids]
            for i, x in enumerate(b.asks):
                if i < len(rows):
                    rows[i] = rows[i][:3] + (f"{x.price}", f"{x.qty}", f"{x.orders}")
                else:
                    rows.append(("", "", "", f"{x.price}", f"{x.qty}", f"{x.orders}"))
            print(b.symbol)
            _table(["orders", "bid qty", "bid", "ask", "ask qty", "orders"], rows)
        elif args.command == "orders":
            _table(["order id", "client id", "symbol", "side", "type", "tif", "price", "leaves", "filled", "state"],
                   [(o.order_id, o.client_order_id, o.symbol, o.side, o.type, o.tif, o.price, o.leaves, o.filled,
                     o.state) for o in await c.open_orders()])
        elif args.command == "order":
            r = await c.place(args.symbol, args.side, args.qty, price=args.price, type=args.type, tif=args.tif,
                              stop_price=args.stop_price, display_qty=args.display_qty, post_only=args.post_only,
                              reduce_only=args.reduce_only)
            _table(["report", "order id", "client id", "symbol", "side", "price", "qty", "reason"],
                   [(r.kind, r.order_id, r.client_order_id, r.symbol, r.side, r.price, r.qty, r.reason or "")])
            return 0 if r.kind == "accepted" else 1
        elif args.command == "positions":
            _table(["symbol", "position", "avg price", "mark", "open buy", "open sell", "unrealized", "realized",
                    "fees", "exposure", "init margin", "maint margin"],
                   [(p.symbol, p.position, p.avg_price, p.mark, p.open_buy, p.open_sell, p.unrealized, p.realized,
                     p.fees, p.exposure, p.initial_margin, p.maintenance_margin) for p in await c.positions()])
        elif args.command == "portfolio":
            pf = await c.portfolio()
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
            _table(["trade id", "time", "aggressor", "price", "qty"],
                   [(t.trade_id, _clock(t.time_ns), t.aggressor, t.price, t.qty) for t in trades])
        elif args.command == "watch":
            sub = await c.subscribe(args.symbol, top=True, depth=args.depth, trades=not args.no_trades)
            shown = 0
            async for update in sub:
                print(market_line(update), flush=True)
                shown += 1
                if args.count and shown >= args.count:
                    break
        elif args.command == "cancel":
            r = await c.cancel(order_id=args.order_id)
            _table(["report", "order id", "qty", "reason"], [(r.kind, r.order_id, r.qty, r.reason or "")])
            return 0 if r.kind == "cancelled" else 1
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="trading-engine")
    p.add_argument("--host", default=os.environ.get("TRADING_ENGINE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("TRADING_ENGINE_PORT", "7001")))
    p.add_argument("--account", type=int, default=int(os.environ.get("TRADING_ENGINE_ACCOUNT", "1")))
    p.add_argument("--secret-file")
    sub = p.add_subparsers(dest="command", required=True)
    o = sub.add_parser("order", help="place an order: order buy BTCUSDT 1.5 --price 45000.00")
    o.add_argument("side", choices=["buy", "sell"])
    o.add_argument("symbol")
    o.add_argument("qty")
    o.add_argument("--price")
    o.add_argument("--type", default=None, choices=["limit", "market", "stop", "stop_limit"])
    o.add_argument("--tif", default="gtc", choices=["gtc", "day", "ioc", "fok", "gtd"])
    o.add_argument("--stop-price")
    o.add_argument("--display-qty")
    o.add_argument("--post-only", action="store_true")
    o.add_argument("--reduce-only", action="store_true", help="may only reduce the account's position")
    c = sub.add_parser("cancel", help="cancel an order by order id")
    c.add_argument("order_id", type=int)
    b = sub.add_parser("book", help="show a book")
    b.add_argument("symbol")
    b.add_argument("--depth", type=int, default=10)
    sub.add_parser("orders", help="the account's open orders")
    sub.add_parser("symbols", help="the symbol directory")
    sub.add_parser("positions", help="the account's positions and P&L")
    sub.add_parser("portfolio", help="the account's cash, equity, margin, leverage and state")
    t = sub.add_parser("trades", help="a symbol's recent trades")
    t.add_argument("symbol")
    t.add_argument("-n", type=int, default=20, help="how many (default 20)")
    w = sub.add_parser("watch", help="print a symbol's market data as it comes")
    w.add_argument("symbol")
    w.add_argument("--depth", type=int, default=5, help="levels per side (0 = top of book only)")
    w.add_argument("--no-trades", action="store_true")
    w.add_argument("--count", type=int, default=0, help="stop after this many updates (0 = until interrupted)")
    args = p.parse_args(argv)
    if args.command == "order" and args.type is None:
        args.type = "limit" if args.price is not None else "market"
    try:
        return asyncio.run(_run(args)) or 0
    except (ServerError, ValueError, ConnectionError) as e:
        print(f"trading-engine: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
