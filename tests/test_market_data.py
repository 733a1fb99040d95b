"""Market data over the real server: subscriptions, updates equal to the book after each
batch, conflation for a subscriber that stops reading (its execution reports still all
arrive), reject codes, recent trades (and their survival across restarts), SDK and CLI."""
import asyncio
import json
import random
import time
from decimal import Decimal

import pytest

from clients import Client, Depth, ServerError, SyncClient, TopOfBook, Trade, TradeSummary
from protocol import wire
from protocol.codes import Reject, Side
from protocol.wire import MdFlag, MsgType
from tests.server_proc import SECRETS
from tests.test_ops import get
from tests.test_sdk import cli
from tests.test_server_session import Raw

ALL = MdFlag.TOP_OF_BOOK | MdFlag.DEPTH | MdFlag.TRADES
MD = (MsgType.TOP_OF_BOOK, MsgType.DEPTH, MsgType.TRADES, MsgType.TRADE_SUMMARY)


def subscribe(c, symbol=1, flags=ALL, levels=5, rid=1):
    c.send(wire.encode(MsgType.SUBSCRIBE, request_id=rid, symbol=symbol, flags=flags, levels=levels))
    t, body, ents = c.until(MsgType.SUBSCRIPTIONS)
    return int(body["status"]), [(int(e["symbol"]), int(e["flags"]), int(e["levels"])) for e in ents]


def book(c, symbol=1, levels=5, rid=99):
    c.send(wire.encode(MsgType.BOOK_DEPTH_REQUEST, request_id=rid, symbol=symbol, levels=levels))
    ents = c.until(MsgType.BOOK_DEPTH)[2]
    side = lambda s: [(int(e["price"]), int(e["qty"]), int(e["orders"])) for e in ents if int(e["side"]) == s]
    return side(Side.BUY), side(Side.SELL)


def depth_of(body, ents):
    nb = int(body["bid_count"])
    rows = [(int(e["price"]), int(e["qty"]), int(e["orders"])) for e in ents]
    return rows[:nb], rows[nb:]


def top_of(body):
    return (int(body["bid_price"]), int(body["bid_qty"]), int(body["bid_orders"]),
            int(body["ask_price"]), int(body["ask_qty"]), int(body["ask_orders"]))


def top_from_book(bids, asks):
    b = bids[0] if bids else (0, 0, 0)
    a = asks[0] if asks else (0, 0, 0)
    return b + a


def test_trade_prints_when_defined_then_carry_no_account_or_order_ids():
    names = set(wire.TRADE_ENTRY.dtype.names) | set(wire.TOP_OF_BOOK.dtype.names) | \
        set(wire.DEPTH_HEADER.dtype.names) | set(wire.TRADE_SUMMARY.dtype.names) | set(wire.LEVEL_ENTRY.dtype.names)
    assert not {n for n in names if "account" in n or "order_id" in n}


def test_updates_when_each_command_is_a_batch_then_match_the_book_after_it(server_factory):
    srv = server_factory(durability="none", heartbeat_ms=30_000).start()
    watcher = Raw(srv.port)
    watcher.logon(4)
    assert subscribe(watcher, levels=5) == (0, [(1, int(ALL), 5)])
    a, b = Raw(srv.port), Raw(srv.port)
    a.logon(1)
    b.logon(2)
    rng = random.Random(7)
    books = {0: book(a)}
    fills = []

    def command(c, clid, side, qty, price, seq):
        c.order(clid, side, qty, price, stp=4)
        c.send(wire.encode(MsgType.BOOK_DEPTH_REQUEST, request_id=seq, symbol=1, levels=5))
        while True:                          # its reports, then the book after it (a query flushes first)
            t, body, ents = c.next()
            if t == MsgType.FILL and int(body["liquidity"]) == wire.Liquidity.TAKER:
                fills.append((int(body["trade_id"]), int(body["price"]), int(body["qty"]), int(body["side"]), seq))
            if t == MsgType.BOOK_DEPTH:
                side_ = lambda s: [(int(e["price"]), int(e["qty"]), int(e["orders"])) for e in ents
                                   if int(e["side"]) == s]
                books[seq] = side_(Side.BUY), side_(Side.SELL)
                return
    for seq in range(1, 121):               # one command per batch: command k has engine seq k
        c = a if rng.random() < 0.5 else b
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        command(c, seq, side, rng.randint(1, 4), rng.randint(95, 105), seq)
    command(a, 10_000, Side.BUY, 1, 106, 121)      # a new best bid: the last update has seq 121
    tops, depths, trades = {}, {}, []
    while True:
        t, body, ents = watcher.until_any(MD)
        if t == MsgType.TOP_OF_BOOK:
            tops[int(body["seq"])] = top_of(body)
        elif t == MsgType.DEPTH:
            depths[int(body["seq"])] = depth_of(body, ents)
        elif t == MsgType.TRADES:
            trades += [(int(e["trade_id"]), int(e["price"]), int(e["qty"]), int(e["side"]), int(e["seq"]))
                       for e in ents]
        if max(tops, default=0) == 121 and max(depths, default=0) == 121:
            break
    assert 0 in tops and 0 in depths          # the picture at subscription time
    last_top = last_depth = None
    for seq in range(122):                   # the latest update at or before each command = the book after it
        last_top = tops.get(seq, last_top)
        last_depth = depths.get(seq, last_depth)
        assert last_depth == books[seq], seq
        assert last_top == top_from_book(*books[seq]), seq
    assert len(tops) < 122 and len(depths) <= 122        # only when something changed
    assert trades == fills and len(fills) > 10            # every print, with the aggressor's side


def test_subscribe_when_request_invalid_then_reject_codes(server_factory):
    srv = server_factory(durability="none", heartbeat_ms=30_000, server_extra="max_subscriptions = 1").start()
    c = Raw(srv.port)
    c.logon(1)
    assert subscribe(c, symbol=77) == (Reject.UNKNOWN_SYMBOL, [])
    assert subscribe(c, flags=0) == (Reject.INVALID_SUBSCRIPTION, [])
    assert subscribe(c, flags=8) == (Reject.INVALID_SUBSCRIPTION, [])
    assert subscribe(c, flags=MdFlag.DEPTH, levels=0) == (Reject.INVALID_SUBSCRIPTION, [])
    assert subscribe(c, flags=MdFlag.DEPTH, levels=wire.MAX_DEPTH_LEVELS + 1) == (Reject.INVALID_SUBSCRIPTION, [])
    c.send(wire.encode(MsgType.UNSUBSCRIBE, request_id=5, symbol=1))
    assert int(c.until(MsgType.SUBSCRIPTIONS)[1]["status"]) == Reject.NOT_SUBSCRIBED
    assert subscribe(c, flags=MdFlag.TRADES, levels=0) == (0, [(1, int(MdFlag.TRADES), 0)])
    assert subscribe(c, symbol=2, flags=MdFlag.TRADES) == (Reject.TOO_MANY_SUBSCRIPTIONS, [(1, int(MdFlag.TRADES), 0)])
    c.send(wire.encode(MsgType.RECENT_TRADES_REQUEST, request_id=6, symbol=77, count=5))
    assert int(c.until(MsgType.RECENT_TRADES)[1]["status"]) == Reject.UNKNOWN_SYMBOL
    c.send(wire.encode(MsgType.UNSUBSCRIBE, request_id=7, symbol=0))
    t, body, ents = c.until(MsgType.SUBSCRIPTIONS)
    assert (int(body["status"]), len(ents)) == (0, 0)
    a, b = Raw(srv.port), Raw(srv.port)          # unsubscribed: a trade now sends it nothing
    a.logon(2)
    b.logon(3)
    a.order(1, Side.SELL, 1, 100)
    a.until(MsgType.ACCEPTED)
    b.order(1, Side.BUY, 1, 100)
    b.until(MsgType.FILL)
    c.send(wire.encode(MsgType.SYMBOL_DIRECTORY_REQUEST, request_id=8))
    assert c.until_any(MD + (MsgType.SYMBOL_DIRECTORY,))[0] == MsgType.SYMBOL_DIRECTORY


def test_subscriber_when_it_stops_reading_then_conflated_and_its_reports_all_arrive(server_factory):
    srv = server_factory(durability="none", heartbeat_ms=30_000,
                         server_extra="md_high_water_bytes = 2048\nmd_low_water_bytes = 512\n"
                                      "socket_send_buffer_bytes = 8192").start()
    slow = Raw(srv.port, rcvbuf=2048)
    slow.logon(1)
    slow.order(1, Side.SELL, 5, 200)              # far from the flow: filled later, while it is behind
    assert slow.until(MsgType.ACCEPTED) is not None
    assert subscribe(slow, levels=20)[0] == 0
    a, b, q = Raw(srv.port), Raw(srv.port), Raw(srv.port)
    a.logon(2)
    b.logon(3)
    q.logon(4)
    behind = 0
    n = 0
    while n < 4000 and not behind:             # trade until the server reports it behind (or give up)
        for _ in range(50):
            n += 1
            a.order(n, Side.SELL, 1, 100 + n % 20, stp=4)
            a.until(MsgType.ACCEPTED)
            b.order(n, Side.BUY, 1, 100 + n % 20, stp=4)       # crosses: a trade and a top change per batch
            b.until(MsgType.ACCEPTED)
        behind = json.loads(get(srv, "/health/detailed")[1])["market_data"]["behind"]
    assert behind == 1, "the subscriber never got behind: kernel buffers larger than expected?"
    for i in range(1, 40):                      # more trades while it is behind
        a.order(n + i, Side.SELL, 1, 101, stp=4)
        a.until(MsgType.ACCEPTED)
        b.order(n + i, Side.BUY, 1, 101, stp=4)
        b.until(MsgType.ACCEPTED)
    b.order(10_000, Side.BUY, 5, 200, stp=4)   # fills the slow subscriber's order: its FILL goes out now
    b.until(MsgType.FILL)
    b.order(10_001, Side.BUY, 1, 150, stp=4)   # a new best bid: the latest state to arrive
    b.until(MsgType.ACCEPTED)
    detailed = json.loads(get(srv, "/health/detailed")[1])
    last_seq = detailed["engine"]["commands"]
    assert detailed["market_data"]["conflated"] > 0
    final_book = book(q, levels=20)
    reports, tops, summaries, trades = [], [], [], []
    depth = top = None
    while True:                                 # now it reads again
        t, body, ents = slow.next(timeout=10)
        if MsgType.ACCEPTED <= t <= MsgType.MASS_CANCEL_DONE:
            reports.append((t, int(body["seq"])))
        elif t == MsgType.TOP_OF_BOOK:
            tops.append(int(body["seq"]))
            top = top_of(body)
        elif t == MsgType.DEPTH:
            depth = (int(body["seq"]), depth_of(body, ents))
        elif t == MsgType.TRADE_SUMMARY:
            summaries.append((int(body["count"]), int(body["first_trade_id"]), int(body["last_trade_id"])))
        elif t == MsgType.TRADES:
            trades += [int(e["trade_id"]) for e in ents]
        if tops and tops[-1] == last_seq and depth and depth[0] == last_seq:
            break
    assert [r for r in reports if r[0] == MsgType.FILL] == [(MsgType.FILL, 2)]     # its own report, sequenced
    assert summaries and sum(c for c, _, _ in summaries) > 0
    assert len(tops) < last_seq / 2                        # far fewer than one per batch: conflated
    assert depth[1] == final_book and top == top_from_book(*final_book)
    seen = sorted(trades + [i for _, f, l in summaries for i in range(f, l + 1)])
    assert seen == list(range(1, len(seen) + 1))          # every trade either printed or summarised, once
    assert "slow consumer" not in srv.output()


def test_recent_trades_when_ring_full_then_newest_kept_and_restart_keeps_them(server_factory):
    srv = server_factory(server_extra="recent_trades = 5").start()

    async def trade_and_read():
        async with Client.connect("127.0.0.1", srv.port, account=1, secret=SECRETS[1]) as a, \
                Client.connect("127.0.0.1", srv.port, account=2, secret=SECRETS[2]) as b:
            for i in range(8):
                await a.place("AAPL", "sell", 10 + i, price=f"{150 + i}.00")
                await b.place("AAPL", "buy", 10 + i, price=f"{150 + i}.00")
            return await b.recent_trades("AAPL", 100), await b.recent_trades("AAPL", 2)

    async def read():
        async with Client.connect("127.0.0.1", srv.port, account=3, secret=SECRETS[3]) as c:
            return await c.recent_trades("AAPL", 100)
    kept, two = asyncio.run(trade_and_read())
    assert [(t.trade_id, t.price, t.qty, t.aggressor) for t in kept] == \
        [(i + 1, Decimal(f"{150 + i}.0000"), Decimal(10 + i), "buy") for i in range(3, 8)]
    assert two == kept[-2:] and all(t.time_ns > 0 for t in kept)
    assert srv.terminate() == 0                  # graceful: the rings are in the shutdown snapshot
    srv.start()
    assert "recovered: 0 commands replayed" in srv.output() and asyncio.run(read()) == kept
    srv.kill9()
    for snap in (srv.dir / "journal" / "snapshots").glob("*.snap"):
        snap.unlink()                            # no snapshot: the rings come back from the journal replay
    srv.start()
    assert asyncio.run(read()) == kept


def test_sdk_subscribe_when_trading_then_typed_updates_and_sync_client(server):
    async def go():
        async with Client.connect("127.0.0.1", server.port, account=1, secret=SECRETS[1]) as a, \
                Client.connect("127.0.0.1", server.port, account=2, secret=SECRETS[2]) as b:
            with pytest.raises(ValueError, match="unknown symbol"):
                await b.subscribe("NOPE")
            sub = await b.subscribe("BTCUSDT", depth=2)
            first = [await sub.__anext__(), await sub.__anext__()]
            assert isinstance(first[0], TopOfBook) and first[0].bid is None and isinstance(first[1], Depth)
            await a.place("BTCUSDT", "sell", "1.000", price="100.00")
            await b.place("BTCUSDT", "buy", "0.250", price="100.00")
            got = []
            while not any(isinstance(u, Trade) for u in got) or not isinstance(got[-1], Depth) \
                    or got[-1].asks[0].qty != Decimal("0.750"):
                got.append(await asyncio.wait_for(sub.__anext__(), 5))
            trade = next(u for u in got if isinstance(u, Trade))
            assert (trade.price, trade.qty, trade.aggressor) == (Decimal("100.00"), Decimal("0.250"), "buy")
            top = [u for u in got if isinstance(u, TopOfBook)][-1]
            assert (top.ask, top.ask_qty, top.last) == (Decimal("100.00"), Decimal("0.750"), Decimal("100.00"))
            await sub.close()
            assert [u async for u in sub] == []              # ended
    asyncio.run(go())
    with SyncClient("127.0.0.1", server.port, account=3, secret=SECRETS[3]) as c:
        sub = c.subscribe("BTCUSDT", top=True, trades=False)
        top = sub.next_update(timeout=5)
        assert isinstance(top, TopOfBook) and top.ask == Decimal("100.00")
        assert [t.trade_id for t in c.recent_trades("BTCUSDT", 10)] == [1]
        with pytest.raises(ServerError, match="NOT_SUBSCRIBED"):
            c.unsubscribe("AAPL")


def test_sdk_subscription_when_application_reads_slowly_then_conflated_locally():
    from clients.client import Subscription, Symbol
    sym = Symbol(1, "X", 2, 0, 1, 1, True)
    sub = Subscription(None, sym, int(ALL), 1, maxsize=3)
    for i in range(1, 6):
        sub._push(Trade("X", i, Decimal(i), Decimal(1), "buy", i, 0))
        sub._push(TopOfBook("X", i, Decimal(i), Decimal(1), 1, None, Decimal(0), 0, Decimal(i), False))
    summary, top = sub._items
    assert (summary.count, summary.first_trade_id, summary.last_trade_id, summary.volume, summary.high,
            summary.low, summary.last) == (5, 1, 5, 5, 5, 1, 5)
    assert top.seq == 5 and sub.conflated == 8


def test_cli_when_trades_and_watch_then_readable_lines(server):
    async def trade():
        async with Client.connect("127.0.0.1", server.port, account=1, secret=SECRETS[1]) as a, \
                Client.connect("127.0.0.1", server.port, account=2, secret=SECRETS[2]) as b:
            await a.place("BTCUSDT", "sell", "2.000", price="45000.00")
            await b.place("BTCUSDT", "buy", "0.500", price="45000.00")
    asyncio.run(trade())
    r = cli(server, "trades", "BTCUSDT")
    assert r.returncode == 0, r.stderr
    assert "45000.00" in r.stdout and "buy" in r.stdout and "0.500" in r.stdout
    r = cli(server, "watch", "BTCUSDT", "--depth", "3", "--count", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("BTCUSDT  top") and "ask 1.500 @ 45000.00 (1)" in lines[0] and "last 45000.00" in lines[0]
    assert lines[1].startswith("BTCUSDT  depth") and "45000.00" in lines[2]
    r = cli(server, "trades", "NOPE")
    assert r.returncode == 1 and "unknown symbol" in r.stderr
