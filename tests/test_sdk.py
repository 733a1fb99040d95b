"""The SDK and the command line against a real server subprocess."""
import asyncio
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from clients import Client, ServerError, SyncClient
from tests.server_proc import ROOT, SECRETS


def run(coro):
    return asyncio.run(coro)


def connect(server, account, **kw):
    return Client.connect("127.0.0.1", server.port, account=account, secret=SECRETS[account], **kw)


def test_lifecycle_when_orders_cross_then_reports_in_decimal(server):
    async def go():
        async with connect(server, 1) as a, connect(server, 2) as b:
            r = await a.place("BTCUSDT", "sell", "1.500", price="45000.00")
            assert (r.kind, r.price, r.qty, r.side) == ("accepted", Decimal("45000.00"), Decimal("1.5"), "sell")
            f = await b.place("BTCUSDT", "buy", "0.5", price="45000.50")
            assert f.kind == "accepted"
            reports = a.reports()
            assert (await reports.__anext__()).kind == "accepted"
            fill = await reports.__anext__()
            assert (fill.kind, fill.price, fill.qty, fill.leaves, fill.liquidity) == \
                ("fill", Decimal("45000.00"), Decimal("0.5"), Decimal("1.0"), "maker")
            amended = await a.amend("BTCUSDT", order_id=r.order_id, qty="0.25")
            assert (amended.kind, amended.leaves) == ("replaced", Decimal("0.25"))
            book = await b.book("BTCUSDT")
            assert [(x.price, x.qty, x.orders) for x in book.asks] == [(Decimal("45000.00"), Decimal("0.25"), 1)]
            info = await a.order(order_id=r.order_id)
            assert (info.filled, info.leaves, info.state) == (Decimal("0.5"), Decimal("0.25"), "resting")
            c = await a.cancel(client_order_id=r.client_order_id)
            assert (c.kind, c.reason, c.qty) == ("cancelled", "user", Decimal("0.25"))
            assert await a.open_orders() == [] and a.gaps == []
    run(go())


def test_place_when_off_tick_or_lot_then_refused_before_sending(server):
    async def go():
        async with connect(server, 1) as a:
            with pytest.raises(ValueError, match="tick"):
                await a.place("AAPL", "buy", 10, price="150.005")
            with pytest.raises(ValueError, match="decimals"):
                await a.place("BTCUSDT", "buy", "0.0001", price="1.00")
            with pytest.raises(TypeError, match="float"):
                await a.place("BTCUSDT", "buy", 0.5, price="1.00")
            assert await a.open_orders() == []
            assert a.next_client_order_id == 1          # nothing was sent
    run(go())


def test_place_when_rejected_then_typed_reason(server):
    async def go():
        async with connect(server, 1) as a:
            r = await a.place("BTCUSDT", "buy", "1", price="100.00", tif="ioc", post_only=True)
            assert (r.kind, r.reason) == ("rejected", "INVALID_POST_ONLY")
            r = await a.place("BTCUSDT", "buy", "1", price="100.00", client_order_id=1)
            assert (r.kind, r.reason) == ("rejected", "DUPLICATE_CLIENT_ORDER_ID")
    run(go())


def test_pipelining_when_many_in_flight_then_each_gets_its_report(server):
    async def go():
        async with connect(server, 1) as a:
            rs = await asyncio.gather(*[a.place("AAPL", "sell", 1 + i % 5, price=f"{150 + i % 20}.00")
                                        for i in range(500)])
            assert [r.kind for r in rs] == ["accepted"] * 500
            assert sorted(r.client_order_id for r in rs) == list(range(1, 501))
            assert len(await a.open_orders()) == 500
            done = await a.mass_cancel(symbol="AAPL")
            assert (done.kind, done.qty) == ("mass_cancel_done", Decimal(500))
    run(go())


def test_stop_and_iceberg_when_traded_then_triggered_and_restated_reports(server):
    async def go():
        async with connect(server, 1) as a, connect(server, 2) as b:
            await a.place("AAPL", "sell", 10, price="100.00", display_qty=4)
            await a.place("AAPL", "sell", 5, price="101.00")
            stop = await b.place("AAPL", "buy", 2, type="stop", stop_price="100.50")
            assert stop.kind == "accepted"
            await b.place("AAPL", "buy", 10, price="100.00")   # prints 100 x4, 4, 2 with refreshes
            await b.place("AAPL", "buy", 1, price="101.00")    # prints 101: the stop triggers
            kinds = []
            async for r in a.reports():
                kinds.append(r.kind)
                if kinds.count("fill") == 5:
                    break
            assert kinds.count("restated") == 2
            async for r in b.reports():
                if r.kind == "triggered":
                    assert r.order_id == stop.order_id and r.price == Decimal("100.50")
                    break
    run(go())


def test_reconnect_when_reports_missed_then_replayed_without_gaps(server):
    async def go():
        a = await connect(server, 1)
        for i in range(3):
            await a.place("AAPL", "sell", 1, price=f"{120 + i}.00")
        seen = a.last_seq
        b = await connect(server, 1)                    # another session places two more
        await b.place("AAPL", "sell", 1, price="130.00")
        await b.place("AAPL", "sell", 1, price="131.00")
        await b.close()
        await a.reconnect()
        got = []
        async for r in a.reports():
            got.append(r.seq)
            if r.seq == seen + 2:
                break
        assert got[-2:] == [seen + 1, seen + 2] and a.gaps == []
        await a.close()
    run(go())


def test_logon_when_wrong_secret_then_server_error(server):
    async def go():
        await Client.connect("127.0.0.1", server.port, account=1, secret="nope")
    with pytest.raises(ServerError, match="AUTH_FAILED"):
        run(go())


def test_sync_client_when_used_then_same_surface_blocking(server):
    with SyncClient("127.0.0.1", server.port, account=2, secret=SECRETS[2]) as c:
        r = c.place("BTCUSDT", "buy", "0.010", price="30000.00")
        assert r.kind == "accepted"
        assert [o.order_id for o in c.open_orders()] == [r.order_id]
        assert c.cancel(order_id=r.order_id).kind == "cancelled"


def cli(server, *args, account=1):
    env = dict(os.environ, TRADING_ENGINE_SECRET=SECRETS[account], PYTHONPATH=str(ROOT),
               TRADING_ENGINE_PORT=str(server.port), TRADING_ENGINE_ACCOUNT=str(account))
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_cli_when_ordering_then_tables_printed(server):
    r = cli(server, "order", "buy", "BTCUSDT", "1.5", "--price", "45000.00")
    assert r.returncode == 0, r.stderr
    assert "accepted" in r.stdout and "45000.00" in r.stdout
    r = cli(server, "book", "BTCUSDT")
    assert r.returncode == 0 and "45000.00" in r.stdout and "1.500" in r.stdout
    r = cli(server, "orders")
    assert r.returncode == 0 and "limit" in r.stdout
    oid = r.stdout.splitlines()[2].split()[0]
    r = cli(server, "cancel", oid)
    assert r.returncode == 0 and "cancelled" in r.stdout
    r = cli(server, "symbols")
    assert "AAPL" in r.stdout and "0.01" in r.stdout
    r = cli(server, "order", "buy", "BTCUSDT", "1.5", "--price", "45000.001")
    assert r.returncode == 1 and "decimals" in r.stderr


def test_gtd_when_expiry_passes_then_server_timer_expires_it(server):
    import time
    from datetime import datetime, timezone

    async def go():
        async with connect(server, 1) as a:
            r = await a.place("AAPL", "sell", 5, price="200.00", tif="gtd",
                              expire=datetime.fromtimestamp(time.time() + 0.3, tz=timezone.utc))
            assert r.kind == "accepted"
            async for rep in a.reports():
                if rep.kind == "cancelled":
                    assert (rep.order_id, rep.reason) == (r.order_id, "expired")
                    break
            assert await a.open_orders() == []
    run(go())
