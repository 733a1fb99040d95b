"""The SDK's session against a real server subprocess: what happens when it ends, timeouts,
typed errors, reconnects, and the request helpers (place without a price, amend without a qty).
Every wait in these tests is bounded (asyncio.wait_for), so a hang fails instead of blocking."""
import asyncio
import inspect
import signal
import socket
from decimal import Decimal

import pytest

from clients import (AuthenticationError, Client, ConnectionClosed, OrderRejected, RateLimitError, RequestTimeout,
                     SyncClient, TradingEngineError)
from protocol.codes import Reject
from tests.server_proc import SECRETS


def run(coro, limit=30):
    return asyncio.run(asyncio.wait_for(coro, limit))


def connect(server, account, **kw):
    return Client.connect("127.0.0.1", server.port, account=account, secret=SECRETS[account], **kw)


def test_place_when_server_stopped_then_connection_error_not_a_hang(server):
    async def go():
        c = await connect(server, 1)
        assert (await c.place("AAPL", "sell", 1, price="100.00")).kind == "accepted"
        server.terminate()                                   # END_OF_SESSION, then the connection closes
        async for _ in c.reports():                          # ends with the session
            pass
        with pytest.raises(ConnectionError) as e:
            await c.place("AAPL", "sell", 1, price="101.00")
        assert isinstance(e.value, ConnectionClosed) and e.value.code == Reject.SERVER_SHUTDOWN
        with pytest.raises(ConnectionClosed):
            await c.open_orders()
        await c.close()
    run(go())


def test_pending_call_when_session_ends_then_connection_error(server):
    async def go():
        c = await connect(server, 1)
        server.proc.send_signal(signal.SIGSTOP)              # the request is sent, never answered...
        try:
            pending = asyncio.ensure_future(c.place("AAPL", "sell", 1, price="100.00"))
            await asyncio.sleep(0.2)
            assert not pending.done()
            server.proc.send_signal(signal.SIGKILL)          # ...and then the connection drops
            with pytest.raises(ConnectionClosed):
                await pending
        finally:
            server.proc.send_signal(signal.SIGCONT)
        await c.close()
    run(go())


def test_request_when_no_reply_within_timeout_then_request_timeout(server):
    async def go():
        c = await connect(server, 1, timeout=0.3)
        server.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(RequestTimeout) as e:
                await c.place("AAPL", "sell", 1, price="100.00")
            assert isinstance(e.value, TimeoutError) and isinstance(e.value, TradingEngineError)
            with pytest.raises(RequestTimeout):
                await c.book("AAPL")
        finally:
            server.proc.send_signal(signal.SIGCONT)
        # the order did reach the engine: its report comes through reports(), and requests work again
        assert (await c.open_orders())[0].price == Decimal("100.00")
        await c.close()
    run(go())


def test_logon_when_next_seq_above_newest_then_requests_still_answered(server):
    async def go():
        async with connect(server, 1) as a:
            await a.place("AAPL", "sell", 1, price="100.00")            # report 1
        async with connect(server, 1, next_seq=1000) as a:             # nothing to replay: not a hang
            assert a.last_seq == 1
            r = await a.place("AAPL", "sell", 1, price="101.00")
            assert (r.kind, r.seq) == ("accepted", 2) and a.gaps == []
    run(go())


def test_errors_when_typed_then_one_base_class_with_code(server):
    async def go():
        with pytest.raises(AuthenticationError) as e:
            await Client.connect("127.0.0.1", server.port, account=1, secret="wrong")
        assert e.value.code == Reject.AUTH_FAILED and isinstance(e.value, TradingEngineError)
        with pytest.raises(ConnectionClosed) as e:                      # nothing listens there
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            await Client.connect("127.0.0.1", port, account=1, secret=SECRETS[1])
        assert isinstance(e.value, ConnectionError)
        async with connect(server, 1) as a:                             # default: rejects are returned
            r = await a.place("BTCUSDT", "buy", "1", price="100.00", tif="ioc", post_only=True)
            assert (r.kind, r.reason) == ("rejected", "INVALID_POST_ONLY")
        async with connect(server, 1, raise_on_reject=True) as a:
            with pytest.raises(OrderRejected) as e:
                await a.place("BTCUSDT", "buy", "1", price="100.00", tif="ioc", post_only=True)
            assert e.value.code == Reject.INVALID_POST_ONLY and e.value.report.kind == "rejected"
            with pytest.raises(OrderRejected) as e:
                await a.cancel(order_id=999)
            assert e.value.code == Reject.UNKNOWN_ORDER
    run(go())


def test_place_when_throttled_then_rate_limit_error(server_factory):
    srv = server_factory(server_extra="orders_per_s = 1.0\norders_burst = 3\n").start()

    async def go():
        async with connect(srv, 1) as a:
            results = await asyncio.gather(*[a.place("AAPL", "sell", 1, price=f"{100 + i}.00") for i in range(6)],
                                           return_exceptions=True)
            limited = [r for r in results if isinstance(r, RateLimitError)]
            assert len(limited) == 3 and all(e.code == Reject.THROTTLED for e in limited)
            assert [r.kind for r in results if not isinstance(r, Exception)] == ["accepted"] * 3
    run(go())


def test_place_when_no_price_then_clear_error_and_market_only_by_explicit_type(server):
    async def go():
        async with connect(server, 1) as a, connect(server, 2) as b:
            with pytest.raises(ValueError, match="type='market'"):
                await a.place("AAPL", "buy", 1)
            with pytest.raises(ValueError, match="needs a price"):
                await a.place("AAPL", "buy", 1, type="limit")
            assert a.next_client_order_id == 1                      # nothing was sent
            await b.place("AAPL", "sell", 2, price="100.00")
            r = await a.place("AAPL", "buy", 1, type="market")
            assert r.kind == "accepted"
            stop = await a.place("AAPL", "buy", 1, stop_price="120.00")   # a stop order, inferred
            limit = await a.place("AAPL", "buy", 1, price="90.00")
            infos = {o.order_id: o for o in await a.open_orders()}
            assert (infos[stop.order_id].type, infos[stop.order_id].stop_price) == ("stop", Decimal("120.00"))
            assert (infos[limit.order_id].type, infos[limit.order_id].stop_price) == ("limit", None)
    run(go())


def test_amend_when_no_qty_then_qty_kept_and_price_changed(server):
    async def go():
        async with connect(server, 1) as a:
            r = await a.place("AAPL", "sell", 7, price="100.00")
            amended = await a.amend("AAPL", order_id=r.order_id, price="101.00")
            assert (amended.kind, amended.leaves) == ("replaced", Decimal(7))
            info = await a.order(order_id=r.order_id)
            assert (info.price, info.leaves) == (Decimal("101.00"), Decimal(7))
    run(go())


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_reconnect_when_server_restarts_then_reports_continue_without_gaps(server_factory):
    srv = server_factory()
    port = _free_port()                      # the same port across the restart
    srv.config.write_text(srv.config.read_text().replace("port = 0\nport_file", f"port = {port}\nport_file", 1))
    srv.start()

    async def go():
        a = await connect(srv, 1, reconnect=True, timeout=5)
        first = await a.place("AAPL", "sell", 1, price="100.00")
        reports = a.reports()
        assert (await reports.__anext__()).seq == first.seq
        srv.kill9()
        with pytest.raises(ConnectionClosed):        # while it is down, calls fail at once
            for _ in range(100):
                await a.place("AAPL", "sell", 1, price="100.00")
                await asyncio.sleep(0.05)
        await asyncio.get_running_loop().run_in_executor(None, srv.start)
        async with connect(srv, 1) as b:             # a report a missed or gets live, either way in order
            missed = await b.place("AAPL", "sell", 1, price="102.00")
        got = await reports.__anext__()
        assert got.seq == missed.seq == first.seq + 1 and a.gaps == []
        while True:                                  # and requests work again once it is back
            try:
                assert (await a.place("AAPL", "sell", 1, price="103.00")).kind == "accepted"
                break
            except ConnectionClosed:
                await asyncio.sleep(0.05)
        assert a.reconnects == 1
        await a.close()
    run(go(), limit=60)


def test_sync_client_when_connected_then_real_methods_context_manager_and_reports_iterator(server):
    for name in ("place", "cancel", "amend", "mass_cancel", "book", "open_orders", "order", "portfolio",
                 "positions", "recent_trades", "subscribe", "symbols", "reports", "close"):
        method = getattr(SyncClient, name)        # a real method (help() and completion see it), typed
        assert method.__doc__ and inspect.signature(method).return_annotation is not inspect.Signature.empty, name
    assert "price" in inspect.signature(SyncClient.place).parameters
    with SyncClient.connect("127.0.0.1", server.port, account=1, secret=SECRETS[1]) as c:
        ack = c.place("AAPL", "sell", 5, price="100.00")
        c.cancel(order_id=ack.order_id)
        kinds = []
        for report in c.reports():
            kinds.append(report.kind)
            if report.kind == "cancelled":
                break
        assert kinds == ["accepted", "cancelled"]
        assert c.amend("AAPL", order_id=ack.order_id, price="101.00").reason == "UNKNOWN_ORDER"
