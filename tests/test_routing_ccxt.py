"""The ccxt venue adapter (engine/routing/ccxt_venue.py, engine/ROUTING.md "Adapters"), against the
real ccxt library, offline.

What runs here: ccxt's exchange classes built and given a static markets dict (set_markets), ccxt's
own parsers turning an exchange's documented payloads (Binance's REST answers below) into unified
orders, trades and books, ccxt's own error mapping of an exchange's error answer, and the adapter
turning all of it into the router's integer units and ExecReport bodies; the config; a router
process with a ccxt venue next to a trading-engine venue.

What does NOT run here: anything that needs the exchange (load_markets, create_order, cancel_order,
watch_order_book, watch_orders, watch_my_trades, fetch_*): there is no network on this machine and
ccxt has no exchange that runs locally. No test here pretends to be an exchange."""
from __future__ import annotations

import asyncio
from decimal import Decimal

import msgspec
import pytest

ccxt = pytest.importorskip("ccxt", reason="the ccxt extra is not installed (pip install 'trading-engine[ccxt]')")

from clients.client import SyncClient  # noqa: E402
from engine.config import ConfigError, SymbolConfig  # noqa: E402
from engine.routing import ccxt_venue as cv  # noqa: E402
from engine.routing import codec  # noqa: E402
from engine.routing import config as rconfig  # noqa: E402
from engine.routing.codec import R  # noqa: E402
from engine.testing import SECRETS  # noqa: E402
from protocol.codes import CancelReason, CommandKind, Reject  # noqa: E402
from protocol.wire import Liquidity, MsgType  # noqa: E402
from tests.test_routing import post_books, router_factory, until_done, venues, wait_book  # noqa: E402,F401

# a unified ccxt market, as an exchange's load_markets leaves it (set_markets fills in the rest)
BTC_USDT = {"id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "baseId": "BTC",
            "quoteId": "USDT", "type": "spot", "spot": True, "margin": False, "swap": False, "future": False,
            "option": False, "contract": False, "linear": None, "inverse": None, "active": True,
            "precision": {"price": 0.01, "amount": 0.001},
            "limits": {"amount": {"min": 0.001, "max": 9000.0}, "price": {"min": 0.01, "max": 1e6}},
            "info": {"orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"]}}     # what binance checks an order type in
ETH_USDT = {**BTC_USDT, "id": "ETHUSDT", "symbol": "ETH/USDT", "base": "ETH", "baseId": "ETH",
            "precision": {"price": 0.05, "amount": 0.0001}}
SYMBOLS = {1: SymbolConfig(id=1, name="BTCUSDT", price_decimals=2, qty_decimals=3),
           2: SymbolConfig(id=2, name="ETHUSDT", price_decimals=2, qty_decimals=3)}
MAPPING = {"BTCUSDT": "BTC/USDT", "ETHUSDT": "ETH/USDT"}


def binance():
    ex = cv.exchange_class("binance")()          # ccxt.pro's binance: REST and websockets
    ex.set_markets([BTC_USDT, ETH_USDT])
    return ex


def spec(s: SymbolConfig):
    return (s.name, s.price_decimals, s.qty_decimals, s.tick_size, s.lot_size)


class Reports:
    """The VenueEvents the adapter calls (the router's side), kept to be read."""

    def __init__(self):
        self.got, self.downs, self.books = [], [], []

    def report(self, venue, msg_type, body, seq):
        self.got.append((msg_type, codec.EXEC_REPORT.unpack(body), seq))

    def depth(self, venue, symbol, bids, asks):
        self.books.append((symbol, bids, asks))

    def down(self, venue):
        self.downs.append(venue)

    def kinds(self):
        return [MsgType(t).name for t, _, _ in self.got]


def adapter(events=None, held=None, secrets=None):
    cfg = msgspec.convert({"exchange": "binance", "symbols": MAPPING}, rconfig.CcxtConfig)
    v = cv.CcxtVenue(3, "X", cfg, events or Reports(), SYMBOLS, held or (lambda: {}), secrets={} if secrets is None
                     else secrets)
    v.exchange = v.new_exchange()                # what connect does, less load_markets (network)
    v.exchange.set_markets([BTC_USDT, ETH_USDT])
    v.maps, v.refused = cv.market_maps(v.exchange, v.symbols, MAPPING)
    v.up = True
    return v


# -- the units' edge --
def test_floats_from_ccxt_become_router_integers_exactly():
    assert int(19.99 * 100) == 1998                                  # what a float multiplication gives
    assert cv.units(19.99, Decimal("0.01")) == 1999                  # through the float's shortest repr
    assert cv.units(0.57, Decimal("0.01")) == 57
    assert cv.units(0.1 + 0.2, Decimal("0.01"), "ROUND_HALF_EVEN") == 30
    with pytest.raises(cv.Inexact):
        cv.units(0.1 + 0.2, Decimal("0.01"))                         # 0.30000000000000004: not exact, refused
    assert cv.units("12.345", Decimal("0.001")) == 12345
    for bad in (float("nan"), float("inf"), "abc", True, None):
        with pytest.raises(cv.Inexact):
            cv.units(bad, Decimal("0.01"))


def test_market_precision_checked_against_the_router_symbol():
    ex = binance()
    mm = cv.MarketMap(1, "BTCUSDT", 2, 3, 1, 1, ex.market("BTC/USDT"), ex.precisionMode)
    assert (mm.price(64250.01), mm.qty(0.123)) == (6425001, 123)
    assert (mm.price_str(6425001), mm.qty_str(123), mm.qty_str(5000)) == ("64250.01", "0.123", "5")
    # ccxt takes the exact strings as they are (its own rounding to the market's precision is a no-op)
    assert ex.price_to_precision("BTC/USDT", mm.price_str(6425001)) == "64250.01"
    assert ex.amount_to_precision("BTC/USDT", mm.qty_str(123)) == "0.123"
    cv.MarketMap(1, "BTCUSDT", 2, 3, 5, 10, ex.market("BTC/USDT"), ex.precisionMode)   # coarser tick and lot: fine
    with pytest.raises(cv.Inexact, match="finer than the router's unit"):
        cv.MarketMap(1, "BTCUSDT", 1, 3, 1, 1, ex.market("BTC/USDT"), ex.precisionMode)
    with pytest.raises(cv.Inexact, match="finer than the router's unit"):
        cv.MarketMap(1, "BTCUSDT", 2, 2, 1, 1, ex.market("BTC/USDT"), ex.precisionMode)     # step 0.001 < 0.01
    with pytest.raises(cv.Inexact, match="tick 0.01 is not a multiple of the exchange's price step 0.05"):
        cv.MarketMap(2, "ETHUSDT", 2, 4, 1, 1, ex.market("ETH/USDT"), ex.precisionMode)
    with pytest.raises(cv.Inexact, match="lot 0.0005 is not a multiple"):
        cv.MarketMap(1, "BTCUSDT", 2, 4, 1, 5, ex.market("BTC/USDT"), ex.precisionMode)     # step 0.001
    maps, refused = cv.market_maps(ex, {s.id: spec(s) for s in SYMBOLS.values()},
                                   {"BTCUSDT": "BTC/USDT", "ETHUSDT": "ETH/USDT"})
    assert set(maps) == {1} and "not a multiple" in refused[2]
    maps, refused = cv.market_maps(ex, {1: spec(SYMBOLS[1])}, {"BTCUSDT": "DOGE/USDT"})
    assert not maps and "DOGE/USDT" in refused[1]                    # ccxt BadSymbol: not listed
    ex.set_markets([{**BTC_USDT, "active": False}])
    maps, refused = cv.market_maps(ex, {1: spec(SYMBOLS[1])}, {"BTCUSDT": "BTC/USDT"})
    assert not maps and "inactive" in refused[1]


def test_significant_digit_exchanges_are_refused():
    ex = cv.exchange_class("bitfinex")()
    assert ex.precisionMode == ccxt.SIGNIFICANT_DIGITS
    ex.set_markets([{**BTC_USDT, "precision": {"price": 5, "amount": 8}}])
    with pytest.raises(cv.Inexact, match="significant digits"):
        cv.MarketMap(1, "BTCUSDT", 2, 3, 1, 1, ex.market("BTC/USDT"), ex.precisionMode)


def test_order_book_parsed_by_ccxt_rounds_only_against_the_client():
    ex = binance()
    # Binance GET /api/v3/depth, through ccxt's parser
    ob = ex.parse_order_book({"lastUpdateId": 1027024,
                              "bids": [["64250.01", "0.5004"], ["64250.00", "1.000"], ["64249.99", "0.0004"],
                                       ["64249.50", "2"]],
                              "asks": [["64250.02", "0.3"], ["64250.10", "0.2"], ["64251", "7"]]}, "BTC/USDT")
    mm = cv.MarketMap(1, "BTCUSDT", 2, 3, 5, 1, ex.market("BTC/USDT"), ex.precisionMode)   # tick 0.05
    bids, asks = mm.book(ob, 10)
    # bids down to the tick (64250.01 and 64250.00 meet at 64250.00), asks up (64250.02 -> 64250.05);
    # quantities down to the lot (0.5004 -> 0.500); a level left empty (0.0004) is dropped
    assert bids == [(6425000, 1500, 2), (6424950, 2000, 1)]
    assert asks == [(6425005, 300, 1), (6425010, 200, 1), (6425100, 7000, 1)]
    assert mm.book(ob, 1) == ([(6425000, 1500, 2)], [(6425005, 300, 1)])


# -- orders and trades into reports --
IOC_ANSWER = {  # Binance POST /api/v3/order (newOrderRespType FULL): an IOC partly filled, then expired
    "symbol": "BTCUSDT", "orderId": 28, "orderListId": -1, "clientOrderId": "te7", "transactTime": 1733300000000,
    "price": "64250.01", "origQty": "0.500", "executedQty": "0.300", "cummulativeQuoteQty": "19275.003",
    "status": "EXPIRED", "timeInForce": "IOC", "type": "LIMIT", "side": "BUY", "workingTime": 1733300000000,
    "selfTradePreventionMode": "NONE",
    "fills": [{"price": "64250.00", "qty": "0.100", "commission": "6.425", "commissionAsset": "USDT",
               "tradeId": 56},
              {"price": "64250.01", "qty": "0.200", "commission": "0.0001", "commissionAsset": "BNB",
               "tradeId": 57}]}


def test_create_order_answer_parsed_by_ccxt_gives_accepted_fills_and_ioc_remainder():
    v = adapter()
    order = v.exchange.parse_order(IOC_ANSWER, v.exchange.market("BTC/USDT"))
    o = v.orders[7] = cv._Order(7, 1, 1, 6425001, 500)        # the child as new_order records it
    v.on_order(order, o)
    ev = v.events
    assert ev.kinds() == ["ACCEPTED", "FILL", "FILL", "CANCELLED"]
    acc, f1, f2, cx = (r for _, r, _ in ev.got)
    assert (acc[R["client_order_id"]], acc[R["order_id"]], acc[R["qty"]], acc[R["price"]]) == (7, 28, 500, 6425001)
    assert (f1[R["price"]], f1[R["qty"]], f1[R["leaves"]], f1[R["trade_id"]], f1[R["fee"]]) == \
        (6425000, 100, 400, 56, 642)                               # fee 6.425 USDT: 642.5 cents, half-even
    assert (f2[R["price"]], f2[R["qty"]], f2[R["leaves"]], f2[R["fee"]]) == (6425001, 200, 200, 0)   # fee in BNB
    assert (cx[R["qty"]], cx[R["leaves"]], cx[R["reason"]]) == (200, 0, CancelReason.IOC_REMAINDER)
    seqs = [s for _, _, s in ev.got]
    assert seqs == sorted(set(seqs)) and all(r[R["seq"]] == s for _, r, s in ev.got)
    # the same trades again from watch_my_trades (Binance's user data stream), parsed by ccxt: not twice
    trade = v.exchange.parse_trade({"symbol": "BTCUSDT", "id": 56, "orderId": 28, "orderListId": -1,
                                    "price": "64250.00", "qty": "0.100", "quoteQty": "6425.0",
                                    "commission": "6.425", "commissionAsset": "USDT", "time": 1733300000000,
                                    "isBuyer": True, "isMaker": False, "isBestMatch": True},
                                   v.exchange.market("BTC/USDT"))
    v.on_trade(trade)
    v.on_order(order)
    assert len(ev.got) == 4


def test_closed_order_waits_for_its_trades_then_ends():
    v = adapter()
    ex, m = v.exchange, v.exchange.market("BTC/USDT")
    o = v.orders[9] = cv._Order(9, 1, 2, 6425000, 300)
    v.on_order(ex.parse_order({**IOC_ANSWER, "orderId": 30, "clientOrderId": "te9", "side": "SELL", "price":
                               "64250.00", "origQty": "0.300", "executedQty": "0.000", "status": "NEW",
                               "fills": []}, m), o)
    closed = ex.parse_order({**IOC_ANSWER, "orderId": 30, "clientOrderId": "te9", "side": "SELL",
                             "price": "64250.00", "origQty": "0.300", "executedQty": "0.100", "status": "CANCELED",
                             "timeInForce": "GTC", "fills": []}, m)
    v.on_order(closed)                                          # by the exchange id (watch_orders)
    assert v.events.kinds() == ["ACCEPTED"]                     # 0.1 filled, its trade not seen yet: wait
    v.on_trade(ex.parse_trade({"symbol": "BTCUSDT", "id": 70, "orderId": 30, "price": "64250.00", "qty": "0.100",
                               "commission": "0", "commissionAsset": "USDT", "time": 1733300000001,
                               "isBuyer": False, "isMaker": True}, m))
    assert v.events.kinds() == ["ACCEPTED", "FILL", "CANCELLED"]
    _, fill, _ = v.events.got[1]
    _, cx, _ = v.events.got[2]
    assert (fill[R["qty"]], fill[R["liquidity"]], fill[R["ts_ns"]]) == (100, Liquidity.MAKER, 1733300000001 * 10**6)
    assert (cx[R["qty"]], cx[R["reason"]]) == (200, CancelReason.USER)
    v.on_trade(ex.parse_trade({"symbol": "BTCUSDT", "id": 71, "orderId": 99, "price": "1", "qty": "1",
                               "time": 1, "isBuyer": True, "isMaker": True}, m))
    assert len(v.events.got) == 3                               # another order of the account: not ours


# -- ccxt's exceptions into the router's outcomes --
@pytest.mark.parametrize("body,code", [
    ('{"code":-2010,"msg":"Account has insufficient balance for requested action."}',
     Reject.VENUE_INSUFFICIENT_FUNDS),
    ('{"code":-2011,"msg":"Unknown order sent."}', Reject.VENUE_ORDER_NOT_FOUND),
    ('{"code":-1013,"msg":"Filter failure: NOTIONAL"}', Reject.VENUE_BAD_REQUEST),
    ('{"code":-1003,"msg":"Too many requests"}', Reject.VENUE_RATE_LIMITED),
    ('{"code":-2014,"msg":"API-key format invalid."}', Reject.VENUE_AUTH_FAILED),
])
def test_an_exchange_error_answer_through_ccxt_maps_to_a_reject_code(body, code):
    import json
    ex = binance()
    with pytest.raises(ccxt.BaseError) as e:                  # ccxt's own mapping of Binance's error answers
        ex.handle_errors(400, "Bad Request", "https://api.binance.com/api/v3/order", "POST", {}, body,
                         json.loads(body), {}, "")
    assert cv.outcome(e.value) == code


def test_exception_outcomes():
    assert cv.outcome(ccxt.InvalidOrder("x")) == Reject.VENUE_INVALID_ORDER
    assert cv.outcome(ccxt.OrderImmediatelyFillable("x")) == Reject.VENUE_INVALID_ORDER
    assert cv.outcome(ccxt.MarketClosed("x")) == Reject.VENUE_REFUSED
    assert cv.outcome(ccxt.BadSymbol("x")) == Reject.VENUE_BAD_REQUEST
    assert cv.outcome(ccxt.NotSupported("x")) == Reject.VENUE_BAD_REQUEST
    assert cv.outcome(ccxt.PermissionDenied("x")) == Reject.VENUE_AUTH_FAILED
    assert cv.outcome(ccxt.ExchangeError("x")) == Reject.VENUE_ERROR
    # in doubt: it may have been taken
    for e in (ccxt.DuplicateOrderId("x"), ccxt.RequestTimeout("x"), ccxt.ExchangeNotAvailable("x"),
              ccxt.NetworkError("x"), ccxt.BadResponse("x"), ccxt.DDoSProtection("x"), RuntimeError("x")):
        assert cv.outcome(e) is None, e
    codes = [c for c in Reject if c.name.startswith("VENUE_")]
    assert codes and all(6050 <= c <= 6099 for c in codes)


def test_create_order_without_credentials_is_refused_by_ccxt_before_the_network():
    async def go():
        v = adapter()
        assert v.raw(codec.NEW_ORDER_FRAME.pack(5, 1, 1, 2, 3, 6425001, 500))     # LIMIT IOC buy
        for _ in range(50):
            await asyncio.sleep(0.01)
            if v.events.got:
                break
        await v.close()
        return v
    v = asyncio.run(go())
    (t, r, _), = v.events.got
    assert t == MsgType.REJECTED and r[R["reason"]] == Reject.VENUE_AUTH_FAILED and r[R["client_order_id"]] == 5
    assert r[R["cmd_kind"]] == CommandKind.NEW_ORDER and not v.events.downs


def test_amend_is_rejected_and_unmapped_symbol_not_written():
    async def go():
        v = adapter()
        v.orders[4] = cv._Order(4, 1, 1, 6425001, 500)
        assert v.raw(codec.AMEND_FRAME.pack(4, 0, 6425000, 400, 0))
        assert not v.new_order(6, 2, 1, 2, 3, 100, 100)          # ETHUSDT refused: never written (routed again)
        await asyncio.sleep(0)
        await v.close()
        return v
    v = asyncio.run(go())
    (t, r, _), = v.events.got
    assert (t, r[R["reason"]], r[R["cmd_kind"]]) == (MsgType.REJECTED, Reject.VENUE_AMEND_UNSUPPORTED,
                                                     CommandKind.AMEND)


def test_router_in_process_with_a_ccxt_venue_journals_its_reports_and_replays_them(tmp_path):
    """The real router (decisions, journal) with the ccxt adapter as its one venue, no network needed: the
    depth from a ccxt-parsed Binance book, a client's IOC buy routed to it, each child's create_order refused
    by ccxt itself before any request (no credentials: AuthenticationError) -> REJECTED 6053, the next wave
    routed, then the remainder cancelled to the client; the journal replayed gives the same state."""
    from engine.journal import Journal
    from engine.routing.config import RouterSection, VenueConfig
    from engine.routing.router import DONE, Router
    from protocol import wire
    from protocol.codes import OrderType, Side, TimeInForce
    from protocol.records import ROUTE_INPUT, ROUTE_OUTPUT

    def router():
        vc = VenueConfig(name="X", kind="ccxt", ccxt=msgspec.convert({"exchange": "binance", "symbols": MAPPING},
                                                                      rconfig.CcxtConfig))
        j = Journal(str(tmp_path / "journal"), "sync", layouts=(ROUTE_INPUT, ROUTE_OUTPUT))
        return Router(RouterSection(), [vc], SYMBOLS, j)

    from_venue = []

    class App:                                              # the VenueEvents RouterApp implements, in short
        def report(self, venue, msg_type, body, seq):
            from_venue.append((msg_type, codec.EXEC_REPORT.unpack(body)))
            r.venue_report(venue, msg_type, body, seq)

        def depth(self, venue, symbol, bids, asks):
            r.book.update(symbol, venue, bids, asks)

        def down(self, venue):
            r.venue_down(venue)

    r = router()
    v = adapter(App(), held=lambda: cv.held_children(r.state, 1))
    v.index = 1
    r.venues[1] = v
    r.rank = {1: 0}
    v.venue_symbol[1] = 1
    ob = v.exchange.parse_order_book({"lastUpdateId": 1, "bids": [["64249.00", "1.000"]],
                                      "asks": [["64250.01", "0.200"], ["64251.00", "1.000"]]}, "BTC/USDT")
    App().depth(1, 1, *v.maps[1].book(ob, 10))

    async def go():
        r.loop = asyncio.get_running_loop()
        body = codec.NEW_ORDER_FRAME.pack(1, 1, Side.BUY, OrderType.LIMIT, TimeInForce.IOC, 6425100, 500)
        r.client_order(7, MsgType.NEW_ORDER, body[wire.HEADER.size:])
        r.flush()
        for _ in range(200):
            await asyncio.sleep(0.01)
            r.flush()
            if any(p.done for p in r.state.parents.values()):
                break
        await v.close()
    asyncio.run(go())
    got = [(MsgType(f[2]).name, codec.EXEC_REPORT.unpack(f[wire.HEADER.size:])) for f in r.state.reports[7]]
    assert [k for k, _ in got] == ["ACCEPTED", "CANCELLED"]
    assert (got[1][1][R["qty"]], got[1][1][R["reason"]]) == (500, CancelReason.IOC_REMAINDER)
    kids = sorted(r.state.children.items())
    assert [(clid, c.state, c.qty, c.price) for (_, clid), c in kids] == [(1, DONE, 500, 6425100),
                                                                          (2, DONE, 500, 6425100)]
    assert [(t, b[R["client_order_id"]], b[R["reason"]]) for t, b in from_venue] == \
        [(MsgType.REJECTED, 1, Reject.VENUE_AUTH_FAILED), (MsgType.REJECTED, 2, Reject.VENUE_AUTH_FAILED)]
    state = (r.state.venue_seq, r.state.report_seq, {k: (c.state, c.filled) for k, c in r.state.children.items()})
    r.journal.close()
    r2 = router()
    r2.recover()
    assert (r2.state.venue_seq, r2.state.report_seq,
            {k: (c.state, c.filled) for k, c in r2.state.children.items()}) == state
    assert r2.state.venue_seq[1] >> cv.SEQ_SHIFT > 1_700_000_000_000     # the adapter's time-carrying sequence
    r2.journal.close()


# -- reconciliation arithmetic and the sequence --
def test_reconcile_skips_the_fills_the_router_has():
    # trades listed oldest first; the exchange says order_filled in all
    assert cv.new_to_fill(0, 300, [100, 200]) == 0             # nothing reported yet: both are new
    assert cv.new_to_fill(100, 300, [100, 200]) == 1
    assert cv.new_to_fill(300, 300, [100, 200]) == 2
    assert cv.new_to_fill(150, 350, [200]) == 0                # 150 of the unlisted (older) 150: the listed is new
    assert cv.new_to_fill(350, 350, [200]) == 1


def _all_orders(ex, **kw):
    """An entry of Binance GET /api/v3/allOrders (or openOrders), parsed by ccxt."""
    raw = {"symbol": "BTCUSDT", "orderId": 28, "orderListId": -1, "clientOrderId": "te7", "price": "64250.01",
           "origQty": "0.500", "executedQty": "0.000", "cummulativeQuoteQty": "0", "status": "NEW",
           "timeInForce": "GTC", "type": "LIMIT", "side": "BUY", "stopPrice": "0.00", "icebergQty": "0.00",
           "time": 1733300000000, "updateTime": 1733300000500, "isWorking": True, "workingTime": 1733300000000,
           "origQuoteOrderQty": "0", "selfTradePreventionMode": "NONE"}
    return ex.parse_order({**raw, **kw}, ex.market("BTC/USDT"))


def _my_trade(ex, tid, order, price, qty, ms):
    """An entry of Binance GET /api/v3/myTrades, parsed by ccxt."""
    return ex.parse_trade({"symbol": "BTCUSDT", "id": tid, "orderId": order, "orderListId": -1, "price": price,
                           "qty": qty, "quoteQty": "0", "commission": "0", "commissionAsset": "USDT", "time": ms,
                           "isBuyer": True, "isMaker": True, "isBestMatch": True}, ex.market("BTC/USDT"))


def test_reconcile_settles_the_routers_children_from_the_exchanges_orders_and_trades():
    from engine.routing.router import DONE, LIVE, SENT
    v = adapter()
    ex = v.exchange
    held = {5: (1, 1, 6425001, 100, 0, LIVE),       # acknowledged, not at the exchange any more: left in doubt
            6: (1, 1, 6425001, 100, 100, DONE),     # over: not looked at
            7: (1, 1, 6425001, 500, 100, LIVE),     # posted; the router has 100 of its fills
            8: (1, 2, 6425000, 300, 0, SENT),       # written, no report journaled; open at the exchange
            9: (1, 1, 6425001, 200, 0, SENT),       # written, never taken by the exchange
            10: (1, 1, 6425001, 200, 0, SENT)}
    orders = [_all_orders(ex, orderId=31, clientOrderId="te8", side="SELL", price="64250.00", origQty="0.300"),
              _all_orders(ex, orderId=28, clientOrderId="te7", executedQty="0.300", status="CANCELED"),
              _all_orders(ex, orderId=40, clientOrderId="web_1")]           # not the router's
    trades = [_my_trade(ex, 58, 28, "64250.01", "0.200", 1733300000300),
              _my_trade(ex, 56, 28, "64250.01", "0.100", 1733300000100),     # the one the router has
              _my_trade(ex, 60, 40, "64250.01", "0.500", 1733300000100)]
    assert v.reconciled(held, orders, {"31"}, trades) == 9                  # 9 and 10: unsent
    got = [(MsgType(t).name, r[R["client_order_id"]], r[R["qty"]], r[R["leaves"]], r[R["trade_id"]])
           for t, r, _ in v.events.got]
    assert got == [("FILL", 7, 200, 200, 58), ("CANCELLED", 7, 200, 0, 0), ("ACCEPTED", 8, 300, 300, 0)]
    assert v.open_at_connect == [(8, 300)]
    # the same again (a second reconnect with nothing new): nothing reported twice
    held[7] = (1, 1, 6425001, 500, 300, DONE)
    held[8] = (1, 2, 6425000, 300, 0, LIVE)
    v.events.got.clear()
    assert v.reconciled(held, orders, {"31"}, trades) == 9
    assert v.events.got == []


def test_reconcile_without_a_trade_list_fills_the_difference_at_the_average_price():
    from engine.routing.router import LIVE
    v = adapter()
    ex = v.exchange
    order = _all_orders(ex, executedQty="0.300", cummulativeQuoteQty="19275.002", status="FILLED", origQty="0.300")
    assert v.reconciled({7: (1, 1, 6425001, 300, 100, LIVE)}, [order], set(), []) == 8
    (t, r, _), = v.events.got
    # 19275.002 / 0.3 = 64250.00666..: the average, half-even to the router's unit
    assert (t, r[R["qty"]], r[R["leaves"]], r[R["price"]]) == (MsgType.FILL, 200, 0, 6425001)


def test_local_sequence_carries_the_last_report_time():
    v = adapter()
    a, b = v.next_seq(), v.next_seq()
    assert b == a + 1 and a >> cv.SEQ_SHIFT > 1_700_000_000_000      # ms since the epoch
    v.seq = (2_000_000_000_000 << cv.SEQ_SHIFT) + 5                  # a journaled seq ahead of the clock
    assert v.next_seq() == v.seq and v.seq == (2_000_000_000_000 << cv.SEQ_SHIFT) + 6


def test_held_children_from_router_state():
    from engine.routing.router import DONE, LIVE, Child, Parent, State
    st = State(2)
    p = Parent(1, 7, 1, 1, 2, 2, 1, 6425000, 500)
    st.parents[1] = p
    for venue, clid, state in ((2, 4, LIVE), (2, 5, DONE), (1, 4, LIVE)):
        c = Child(venue, clid, 1, 6425000, 100, 1)
        c.state, c.filled = state, 30
        st.children[(venue, clid)] = c
    assert cv.held_children(st, 2) == {4: (1, 2, 6425000, 100, 30, LIVE), 5: (1, 2, 6425000, 100, 30, DONE)}


# -- config --
def _load(tmp_path, venue: str):
    p = tmp_path / "router.toml"
    p.write_text('[[symbols]]\nid = 1\nname = "BTCUSDT"\nqty_decimals = 3\n' + venue)
    return rconfig.load(str(p))


def test_config_ccxt_venue(tmp_path, monkeypatch):
    cfg = _load(tmp_path, '[[venues]]\nname = "X"\nkind = "ccxt"\ntaker_fee = "0.001"\n[venues.ccxt]\n'
                          'exchange = "binance"\napi_key_env = "X_KEY"\nsecret_env = "X_SECRET"\n'
                          'symbols = { BTCUSDT = "BTC/USDT" }\noptions = { defaultType = "spot" }\n')
    v = cfg.venues[0]
    assert v.kind == "ccxt" and v.ccxt.symbols == {"BTCUSDT": "BTC/USDT"}
    monkeypatch.setenv("X_KEY", "k" * 64)
    monkeypatch.setenv("X_SECRET", "s" * 64)
    assert cv.credentials("X", v.ccxt) == {"apiKey": "k" * 64, "secret": "s" * 64}
    monkeypatch.setenv("X_SECRET", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        cv.credentials("X", v.ccxt)
    for bad, why in (('symbols = { ETHUSDT = "ETH/USDT" }', "not in"),
                     ('symbols = { BTCUSDT = "BTC/USDT" }\nsecret = "inline"', "unknown field"),
                     ('symbols = { BTCUSDT = "BTC/USDT" }\nclient_order_id_prefix = "t-"', "prefix")):
        with pytest.raises(ConfigError, match=why):
            _load(tmp_path, f'[[venues]]\nname = "X"\nkind = "ccxt"\n[venues.ccxt]\nexchange = "binance"\n{bad}\n')
    with pytest.raises(ConfigError, match="kind ccxt takes"):
        _load(tmp_path, '[[venues]]\nname = "X"\nkind = "ccxt"\ndemo_secret = "x"\n[venues.ccxt]\n'
                        'exchange = "binance"\nsymbols = { BTCUSDT = "BTC/USDT" }\n')
    with pytest.raises(ConfigError, match="needs kind"):
        _load(tmp_path, '[[venues]]\nname = "X"\nport = 1\naccount = 1\n[venues.ccxt]\n'
                        'exchange = "binance"\nsymbols = { BTCUSDT = "BTC/USDT" }\n')
    with pytest.raises(ConfigError, match="no exchange"):
        cv.exchange_class("nosuchexchange")


CCXT_VENUE = ('\n[[venues]]\nname = "X"\nkind = "ccxt"\ntaker_fee = "0.0001"\n[venues.ccxt]\n'
              'exchange = "binance"\nsymbols = { BTCUSDT = "BTC/USDT" }\n')


def test_router_with_an_unreachable_ccxt_venue_routes_to_the_others(venues, router_factory):
    """A router process with a ccxt venue (kind = "ccxt") beside a trading-engine one. The exchange cannot be
    reached from here (no network: load_markets fails), so the ccxt venue stays down and the order fills at
    the trading-engine venue, though the ccxt venue was configured cheaper."""
    post_books({"A": venues["A"]})
    router = router_factory({"A": venues["A"]}, extra=CCXT_VENUE).start()
    with SyncClient.connect("127.0.0.1", router.port, account=1, secret=SECRETS[1]) as c:
        wait_book(c, n_asks=2, n_bids=1)
        ack = c.place("BTCUSDT", "buy", "0.010", price="50030.00")
        assert ack.kind == "accepted"
        reports = until_done(c, ack.client_order_id)
    assert sum(r.qty for r in reports if r.kind == "fill") == Decimal("0.010")
    st = {v["venue"]: v for v in router.status()["venues"]}
    assert st["A"]["up"] and not st["X"]["up"]
    assert any("venue_connect_failed" in line and '"venue":"X"' in line and "binance" in line
               for line in router.output().splitlines())          # ccxt's binance tried, and failed
