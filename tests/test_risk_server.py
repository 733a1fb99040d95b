"""Risk over the protocol, end to end: a real server with [risk] on (tests/server_proc.py), funded and
steered by admin actions (engine/admin.py, over its JSON-lines listener and the `trading-engine admin`
command line), traded through the SDK; every figure checked here was computed by hand from
engine/RISK.md (notional of BTCUSDT = price x qty, cash in cents)."""
import asyncio
import fcntl
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from decimal import Decimal as D

import msgspec
import pytest

from clients import Client, ServerError, SyncClient
from engine.admin import ADDED_ACCOUNTS, hash_password
from engine.config import signing_key
from tests.server_proc import ROOT, SECRETS

PASSWORD = "correct horse"
HASH = hash_password(PASSWORD, n=1 << 10)      # a cheap cost factor for the tests only
RISK = """enabled = true
mark_interval_ms = 50

[risk.defaults]
initial_margin = "0.10"
maintenance_margin = "0.05"
max_leverage = "10"
"""
CONFIG_LIMITS = 3                                # the SET_LIMITs the config above journals


class Admin:
    """The admin listener's JSON lines, over one connection (as an operator's tool would)."""

    def __init__(self, srv, user="ops", password=PASSWORD):
        self.sock = socket.create_connection(("127.0.0.1", srv.admin_port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.user, self.password = user, password

    def __call__(self, action, **fields):
        self.sock.sendall(json.dumps(dict(user=self.user, password=self.password, action=action,
                                          **fields)).encode() + b"\n")
        return json.loads(self.file.readline())

    def ok(self, action, **fields):
        out = self(action, **fields)
        assert out["ok"], out
        return out


def admin_cli(srv, *args, **env):
    e = dict(os.environ, TRADING_ENGINE_ADMIN_PASSWORD=PASSWORD, TRADING_ENGINE_ADMIN_USER="ops",
             TRADING_ENGINE_ADMIN_PORT=str(srv.admin_port), PYTHONPATH=str(ROOT), **env)
    r = subprocess.run([sys.executable, "-m", "engine.cli", "admin", *args], env=e, capture_output=True, text=True,
                       timeout=60)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else r.stderr


def cli(srv, account, *args, rc=0):
    env = dict(os.environ, TRADING_ENGINE_SECRET=SECRETS[account], PYTHONPATH=str(ROOT),
               TRADING_ENGINE_PORT=str(srv.port), TRADING_ENGINE_ACCOUNT=str(account))
    r = subprocess.run([sys.executable, "-m", "engine.cli", *args], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == rc, r.stdout + r.stderr
    return r.stdout


def journal_rows(srv, *filters):
    r = subprocess.run([sys.executable, "-m", "engine.cli", "journal", "dump", str(srv.dir / "journal"), "--format",
                        "jsonl", "--raw", *filters], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [msgspec.json.decode(line) for line in r.stdout.splitlines()]


def connect(srv, account, secret=None):
    return Client.connect("127.0.0.1", srv.port, account=account, secret=secret or SECRETS[account])


async def logon(srv, account, secret):
    async with connect(srv, account, secret):
        pass


async def until(reports, pred, timeout=10.0):
    """Reports from the iterator up to and including the first that pred accepts."""
    out = []
    while True:
        r = await asyncio.wait_for(reports.__anext__(), timeout)
        out.append(r)
        if pred(r):
            return out


async def eventually(probe, timeout=15.0):
    """Await probe() until it returns something true (a state the server's timer brings about)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got:
            return got
        assert time.monotonic() < deadline, "the server never got there"
        await asyncio.sleep(0.05)


def fund(ad, **amounts):
    for account, amount in amounts.items():
        out = ad.ok("deposit", account=account, amount=amount)
        assert out["events"][0]["event"] == "balance" and D(out["events"][0]["amount"]) == D(amount)


def trading_server(server_factory, risk=RISK):
    """A risk server with its admin, accounts 1 and 2 funded with 1,000,000.00, BTCUSDT marked 50,000.00."""
    srv = server_factory(risk=risk, admins={"ops": HASH}).start()
    ad = Admin(srv)
    fund(ad, acct1="1000000", acct2="1000000")
    ad.ok("mark", symbol="BTCUSDT", price="50000.00")
    return srv, ad


def kinds(out):
    return [e["event"] for e in out["events"]]


# -- the liquidation scenario --

def test_liquidation_when_mark_falls_below_maintenance_then_closed_flagged_and_figures_exact(server_factory):
    srv = server_factory(risk=RISK, admins={"ops": HASH}).start()
    ad = Admin(srv)
    fund(ad, acct1="10000.00", acct2="1000000", acct3="1000000")
    ad.ok("mark", symbol="BTCUSDT", price="50000.00")
    rc, out = admin_cli(srv, "set_limit", "symbol", "BTCUSDT", "taker_fee", "0.0010")   # 10 bps
    assert rc == 0 and out["events"] == [{"event": "limit_set", "symbol": "BTCUSDT", "scope": "symbol",
                                          "kind": "taker_fee", "value": "0.0010"}]
    ad.ok("set_limit", scope="symbol", target="BTCUSDT", kind="maker_fee", value="0.0002")        # 2 bps

    async def go():
        async with connect(srv, 1) as c1, connect(srv, 2) as c2, connect(srv, 3) as c3:
            reports = c1.reports()
            assert (await c2.place("BTCUSDT", "sell", "1.000", price="50000.00")).kind == "accepted"
            assert (await c1.place("BTCUSDT", "buy", "1.000", price="50000.00")).kind == "accepted"   # taker
            resting = await c1.place("BTCUSDT", "buy", "0.100", price="40000.00")
            assert resting.kind == "accepted"
            assert (await c3.place("BTCUSDT", "buy", "1.000", price="42000.00")).kind == "accepted"
            # acct1: long 1 at 50,000 on 10,000 of cash, a 0.1 bid open: worst case 1.1 BTC
            fee = D("50000.00") * 1 * D("0.0010")                                # 50.00
            cash = D("10000.00") - fee
            pf = await c1.portfolio()
            assert (pf.cash, pf.equity, pf.unrealized, pf.fees) == (cash, cash, 0, fee)
            assert (pf.exposure, pf.worst_exposure) == (D("50000.00"), D("55000.00"))
            assert (pf.initial_margin, pf.maintenance_margin) == (D("5500.00"), D("2500.00"))   # 10% of 1.1, 5% of 1
            assert pf.available == cash - D("5500.00") and pf.daily_pnl == -fee
            assert pf.leverage == D(-(-5000000 * 10000 // 995000)) / 10000          # exposure/equity, rounded up
            assert (pf.state, pf.open_orders, pf.kill_switch, pf.cash_decimals) == ("active", 1, False, 2)
            (p,) = await c1.positions()
            assert (p.symbol, p.position, p.avg_price, p.mark, p.open_buy, p.open_sell) == \
                ("BTCUSDT", D("1.000"), D("50000.00"), D("50000.00"), D("0.100"), 0)
            # the mark drops to 42,000: equity 9,950 - 8,000 = 1,950 < maintenance 5% x 42,000 = 2,100
            out = ad.ok("mark", symbol="BTCUSDT", price="42000.00")
            assert kinds(out) == ["mark", "account_state", "cancelled", "accepted", "fill", "account_state"]
            ev = out["events"]
            assert ev[1] == {"event": "account_state", "account": "acct1", "state": "liquidating",
                             "kill_switch": False}
            assert (ev[2]["order_id"], ev[2]["reason"]) == (resting.order_id, "liquidation")
            assert ev[3]["liquidation"] and (ev[3]["side"], ev[3]["qty"]) == ("sell", "1.000")
            assert ev[4]["maker_account"] == "acct3" and (ev[4]["price"], ev[4]["qty"]) == ("42000.00", "1.000")
            assert ev[5]["state"] == "active"
            got = await until(reports, lambda r: r.kind == "account_state" and r.state == "active")
            tail = got[-5:]
            assert [(r.kind, r.state if r.kind == "account_state" else r.reason) for r in tail] == \
                [("account_state", "liquidating"), ("cancelled", "liquidation"), ("accepted", None), ("fill", None),
                 ("account_state", "active")]
            assert [r.liquidation for r in tail[1:4]] == [False, True, True]
            assert not tail[0].kill_switch and tail[0].request == "mark_price"
            assert tail[1].order_id == resting.order_id and tail[2].client_order_id == 0
            assert (tail[3].price, tail[3].qty, tail[3].liquidity) == (D("42000.00"), D("1.000"), "taker")
            assert got[0].kind == "balance" and (got[0].amount, got[0].cash) == (D("10000.00"), D("10000.00"))
            assert tail[3].fee == D("42000.00") * D("0.0010") and tail[3].ts_ns == tail[0].ts_ns > 0
            # after: flat, realized -8,000, fees 50 + 42
            fee2 = D("42000.00") * D("0.0010")
            pf = await c1.portfolio()
            want_cash = D("10000.00") - 8000 - fee - fee2                            # 1,908.00
            assert (pf.cash, pf.equity, pf.realized, pf.fees) == (want_cash, want_cash, D("-8000.00"), fee + fee2)
            assert (pf.exposure, pf.initial_margin, pf.maintenance_margin, pf.available) == (0, 0, 0, want_cash)
            assert (pf.state, pf.open_orders, pf.daily_pnl) == ("active", 0, want_cash - D("10000.00"))
            assert await c1.positions() == []
            (p3,) = await c3.positions()                                             # bought the liquidation
            assert (p3.position, p3.avg_price, p3.mark, p3.unrealized) == (D("1.000"), D("42000.00"), D("42000.00"), 0)
            assert (p3.fees, p3.exposure, p3.initial_margin, p3.maintenance_margin) == \
                (D("42000.00") * D("0.0002"), D("42000.00"), D("4200.00"), D("2100.00"))
            (p2,) = await c2.positions()                                             # short 1 from 50,000
            assert (p2.position, p2.unrealized, p2.fees) == (D("-1.000"), D("8000.00"), D("10.00"))
            pf2 = await c2.portfolio()
            assert (pf2.cash, pf2.equity) == (D("1000000.00") - 10, D("1000000.00") - 10 + 8000)
            # the operator's read-only view says the same
            view = ad.ok("portfolio", account="acct1")["portfolio"]
            assert D(view["cash"]) == want_cash and D(view["realized"]) == -8000 and view["state"] == "active"
            (v2,) = ad.ok("positions", account="2")["positions"]
            assert (D(v2["position"]), D(v2["unrealized"]), D(v2["mark"])) == (-1, 8000, 42000)
    asyncio.run(go())
    with SyncClient("127.0.0.1", srv.port, account=3, secret=SECRETS[3]) as sc:   # the blocking SDK proxies them
        assert sc.portfolio().cash == D("1000000.00") - D("8.40") and sc.positions()[0].position == D("1.000")
    # the command line: readable tables, and --reduce-only
    out = cli(srv, 3, "positions")
    assert out.splitlines()[2].split()[:4] == ["BTCUSDT", "1.000", "42000.00", "42000.00"]
    figures = dict(line.strip().rsplit(None, 1) for line in cli(srv, 1, "portfolio").splitlines()[2:])
    assert (figures["cash"], figures["realized P&L"], figures["state"]) == ("1908.00", "-8000.00", "active")
    out = cli(srv, 3, "order", "sell", "BTCUSDT", "1.001", "--price", "42000.00", "--reduce-only", rc=1)
    assert "REDUCE_ONLY_VIOLATION" in out                  # more than the 1.000 held
    assert "accepted" in cli(srv, 3, "order", "sell", "BTCUSDT", "1.000", "--price", "43000.00", "--reduce-only")


# -- reduce-only orders cut when the position no longer covers them --

def test_reduce_only_when_the_position_is_sold_by_another_order_then_cut_and_reported(server_factory):
    srv, ad = trading_server(server_factory)

    async def go():
        async with connect(srv, 1) as c1, connect(srv, 2) as c2:
            reports = c1.reports()
            assert (await c2.place("BTCUSDT", "sell", "1.000", price="50000.00")).kind == "accepted"
            assert (await c1.place("BTCUSDT", "buy", "1.000", price="50000.00")).kind == "accepted"   # long 1
            tp = await c1.place("BTCUSDT", "sell", "1.000", price="55000.00", reduce_only=True)       # take profit
            assert tp.kind == "accepted"
            assert (await c2.place("BTCUSDT", "buy", "0.400", price="49000.00")).kind == "accepted"
            # account 1 sells 0.4 with an ordinary order: long 0.6 < the 1.0 the reduce-only one would sell
            assert (await c1.place("BTCUSDT", "sell", "0.400", price="49000.00", tif="ioc")).kind == "accepted"
            got = await until(reports, lambda r: r.kind == "cancelled" and r.order_id == tp.order_id)
            assert got[-1].reason == "reduce_only"
            assert await c1.open_orders() == [] and (await c1.positions())[0].position == D("0.600")
    asyncio.run(go())
    cut = [r for r in journal_rows(srv, "--event-type", "cancelled") if r["account"] == 1]
    assert [r["reason"] for r in cut] == ["reduce_only"]


# -- kill switch --

def test_kill_switch_when_on_for_an_account_or_all_then_cancels_and_rejects_until_off(server_factory):
    srv, ad = trading_server(server_factory)

    async def go():
        async with connect(srv, 1) as c1, connect(srv, 2) as c2:
            reports = c1.reports()
            ids = [(await c1.place("BTCUSDT", "buy", "0.100", price=p)).order_id for p in ("49000.00", "48000.00")]
            other = await c2.place("BTCUSDT", "sell", "0.100", price="51000.00")
            out = ad.ok("kill", account="acct1", switch="on")
            assert kinds(out) == ["account_state", "cancelled", "cancelled"] and out["events"][0]["kill_switch"]
            assert [(e["order_id"], e["reason"]) for e in out["events"][1:]] == [(i, "kill_switch") for i in ids]
            got = await until(reports, lambda r: r.kind == "cancelled" and r.order_id == ids[1])
            assert [r.kind for r in got[-3:]] == ["account_state", "cancelled", "cancelled"]
            assert (got[-3].state, got[-3].kill_switch) == ("active", True)
            r = await c1.place("BTCUSDT", "buy", "0.100", price="49000.00")
            assert (r.kind, r.reason) == ("rejected", "KILL_SWITCH")
            assert (await c1.portfolio()).kill_switch and not (await c2.portfolio()).kill_switch
            assert [o.order_id for o in await c2.open_orders()] == [other.order_id]      # untouched
            assert (await c2.place("BTCUSDT", "sell", "0.100", price="52000.00")).kind == "accepted"
            status = ad.ok("status")["status"]
            assert status["risk"]["killed_accounts"] == ["acct1"]
            queue = status["queue"]                                   # queue status: batch, output per session
            assert queue["pending_commands"] == 0 and queue["batch_capacity"] > 0
            assert sorted(x["account"] for x in queue["sessions"]) == ["acct1", "acct2"]
            assert all(x["output_buffer_bytes"] >= 0 for x in queue["sessions"])
            ad.ok("kill", account="acct1", switch="off")
            assert (await c1.place("BTCUSDT", "buy", "0.100", price="49000.00")).kind == "accepted"
            # global, from the command line
            rc, out = admin_cli(srv, "kill", "all", "on")
            assert rc == 0 and out["events"][0] == {"event": "account_state", "account": "all", "kill_switch": True}
            assert sorted(e["account"] for e in out["events"] if e["event"] == "cancelled") == \
                ["acct1", "acct2", "acct2"]
            assert await c1.open_orders() == [] and await c2.open_orders() == []
            for c in (c1, c2):
                r = await c.place("BTCUSDT", "sell", "0.100", price="55000.00")
                assert (r.kind, r.reason) == ("rejected", "KILL_SWITCH")
                assert (await c.portfolio()).kill_switch
            assert ad.ok("status")["status"]["risk"]["global_kill_switch"] is True
            rc, _ = admin_cli(srv, "kill", "all", "off")
            assert rc == 0
            assert (await c2.place("BTCUSDT", "sell", "0.100", price="55000.00")).kind == "accepted"
            assert not (await c2.portfolio()).kill_switch
    asyncio.run(go())


# -- circuit breakers --

def test_breakers_when_price_moves_past_band_or_rejects_flood_then_halt_and_resume(server_factory):
    risk = RISK + 'breaker_band = "0.05"\nbreaker_window_ms = 60000\nbreaker_cooloff_ms = 1000\n'
    srv, ad = trading_server(server_factory, risk)
    ad.ok("mark", symbol="AAPL", price="190.00")
    ad.ok("set_limit", scope="symbol", target="AAPL", kind="breaker_cooloff_ms", value="0")   # admin resume only

    async def trade(c1, c2, symbol, qty, price):
        assert (await c2.place(symbol, "sell", qty, price=price)).kind == "accepted"
        assert (await c1.place(symbol, "buy", qty, price=price)).kind == "accepted"

    async def trading(c, symbol):
        return {s.name: s.trading for s in await c.symbols()}[symbol]

    async def go():
        async with connect(srv, 1) as c1, connect(srv, 2) as c2:
            await trade(c1, c2, "BTCUSDT", "0.100", "50000.00")     # the window's first trade
            await trade(c1, c2, "BTCUSDT", "0.100", "52500.00")     # +5%: inside the band
            assert await trading(c1, "BTCUSDT")
            await trade(c1, c2, "BTCUSDT", "0.100", "52500.01")     # beyond 5%: halted
            assert not await trading(c1, "BTCUSDT")
            status = ad.ok("status")["status"]
            assert status["halted_symbols"] == ["BTCUSDT"] and status["risk"]["breaker_halted_symbols"] == ["BTCUSDT"]
            r = await c1.place("BTCUSDT", "buy", "0.100", price="52000.00")
            assert (r.kind, r.reason) == ("rejected", "SYMBOL_HALTED")
            await eventually(lambda: trading(c1, "BTCUSDT"))      # a RISK_TICK after the 1 s cool-off
            assert (await c1.place("BTCUSDT", "buy", "0.100", price="52000.00")).kind == "accepted"
            # AAPL's cool-off is 0: only an admin resumes it
            await trade(c1, c2, "AAPL", 10, "190.00")
            await trade(c1, c2, "AAPL", 10, "200.00")
            assert not await trading(c1, "AAPL")

            async def aapl_marked():                              # a RISK_TICK ran after the halt
                return any(p.symbol == "AAPL" and p.mark == D("200.00") for p in await c1.positions())
            await eventually(aapl_marked)
            await eventually(lambda: trading(c1, "BTCUSDT"))      # (and nothing resumed AAPL meanwhile)
            assert not await trading(c1, "AAPL")
            rc, out = admin_cli(srv, "resume", "AAPL")
            assert rc == 0 and kinds(out) == ["symbol_state"] and out["events"][0]["state"] == "trading"
            assert await trading(c1, "AAPL")
            # engine-wide: more than 3 rejects within a second of journaled time trips it
            ad.ok("set_limit", scope="default", kind="error_threshold", value="3")
            bad = await asyncio.gather(*[c1.place("AAPL", "sell", 1000, price="190.00", reduce_only=True)
                                         for _ in range(4)])      # the 4th trips it
            assert {r.reason for r in bad} == {"REDUCE_ONLY_VIOLATION"}   # AAPL long 20: 1000 is more than it
            r = await c2.place("BTCUSDT", "sell", "0.100", price="53000.00")
            assert (r.kind, r.reason) == ("rejected", "CIRCUIT_BREAKER")
            assert ad.ok("status")["status"]["risk"]["error_breaker_tripped"] is True
            out = ad.ok("reset_breaker")
            assert out["events"] == [{"event": "breaker", "reset": True, "breaker": "engine-wide"}]
            assert (await c2.place("BTCUSDT", "sell", "0.100", price="53000.00")).kind == "accepted"
            r = await c1.place("AAPL", "sell", 10, price="200.00", reduce_only=True)
            assert r.kind == "accepted"                            # 10 of the 20 held: reduces
    asyncio.run(go())
    ticks = journal_rows(srv, "--event-type", "risk_tick,breaker")
    assert any(r["record"] == "command" and r["kind"] == "risk_tick" for r in ticks)
    brk = [(r["symbol"], r["reason"]) for r in ticks if r["record"] == "event"]
    assert (1, "1") in brk and (1, "2") in brk and (2, "1") in brk          # BTCUSDT tripped and reset; AAPL


# -- every admin action journaled with its operator --

def test_admin_actions_when_taken_then_journaled_with_operator_and_answered_with_events(server_factory):
    srv = server_factory(risk=RISK, admins={"root": HASH, "ops": HASH}).start()      # ops is operator 2
    ad = Admin(srv)
    fund(ad, acct1="100.00")
    out = ad("withdraw", account="acct1", amount="100.01")
    assert out == {"ok": False, "seq": out["seq"], "error": "INSUFFICIENT_FUNDS",
                   "events": [{"event": "rejected", "account": "acct1", "reason": "INSUFFICIENT_FUNDS"}]}
    assert ad.ok("withdraw", account="acct1", amount="0.01")["events"][0]["cash"] == "99.99"
    assert ad("deposit", account="acct1", amount="0.001")["error"] == "amount 0.001 has more than 2 decimals"
    assert ad("deposit", account="nobody", amount="1")["error"] == "unknown account 'nobody'"
    out = ad.ok("set_limit", scope="account", target="acct1", kind="max_order_value", value="2500.50")
    assert out["events"][0]["value"] == "2500.50"
    assert "cannot be set at this scope" in ad("set_limit", scope="account", target="acct1", kind="breaker_band",
                                              value="0.1")["error"]
    out = ad.ok("set_limit", scope="strategy", target="3", kind="max_open_orders", value="2")
    assert out["events"][0]["value"] == 2 and out["events"][0]["strategy"] == 3
    assert ad.ok("set_limit", scope="account", target="acct1", kind="max_order_value", clear=True)["events"][0][
        "cleared"]
    rc, out = admin_cli(srv, "set_limit", "default", "max_daily_loss", "5000")
    assert rc == 0 and out["events"][0]["value"] == "5000.00"
    limits = {(x["scope"], x["target"], x["kind"]): x["value"] for x in ad.ok("limits")["limits"]}
    assert limits[("default", None, "max_daily_loss")] == "5000.00" and limits[("strategy", 3, "max_open_orders")] == 2
    assert ("account", "acct1", "max_order_value") not in limits
    ad.ok("kill", account="acct1", switch="on")
    ad.ok("kill", account="acct1", switch="off")
    assert ad.ok("account_state", account="acct1", state="reduce_only")["events"][0]["state"] == "reduce_only"
    assert ad.ok("restrict", account="acct1", symbol="AAPL")["events"][0] == \
        {"event": "symbol_restriction", "account": "acct1", "symbol": "AAPL", "restricted": True}
    ad.ok("allow", account="acct1", symbol="AAPL")
    assert ad("mark", symbol="AAPL", price="190.001")["error"] == "price 190.001 is not a multiple of the tick 0.0100"
    ad.ok("mark", symbol="AAPL", price="190.00")
    ad.ok("reset_breaker")
    ad.ok("halt", symbol="AAPL")
    ad.ok("resume", symbol="AAPL")
    ad.ok("end_of_day")
    assert ad("kill", account="acct1", switch="maybe")["error"] == "kill ACCOUNT|all on|off"
    assert Admin(srv, password="wrong")("status") == {"ok": False, "error": "authentication failed"}
    ad.password = "wrong"                # a proven connection is checked again when the password changes
    assert ad("status") == {"ok": False, "error": "authentication failed"}
    ad.password = PASSWORD
    ad.ok("status")
    rows = journal_rows(srv, "--operator", "2")
    cmds = [r for r in rows if r["record"] == "command"]
    assert {r["operator"] for r in cmds} == {2}
    assert [r["kind"] for r in cmds] == [
        "deposit", "withdraw", "withdraw", "set_limit", "set_limit", "set_limit", "set_limit", "kill_switch",
        "kill_switch", "set_account_state", "restrict_symbol", "restrict_symbol", "mark_price", "reset_breaker",
        "halt", "resume", "end_of_day"]
    assert [r["reason"] for r in rows if r["record"] == "event" and r["kind"] == "rejected"] == ["insufficient_funds"]
    config = [r for r in journal_rows(srv, "--event-type", "set_limit") if r["operator"] == 0]
    assert len(config) == CONFIG_LIMITS                  # the start-up set-up: operator 0
    r = subprocess.run([sys.executable, "-m", "engine.cli", "journal", "dump", str(srv.dir / "journal"),
                        "--event-type", "halt"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    head, line = r.stdout.splitlines()[:2]
    assert head.split()[4] == "op" and line.split()[4] == "2"      # the table shows who did it


# -- kill -9 and restart --

def test_restart_when_killed_then_positions_cash_limits_states_survive_and_config_not_journaled_twice(server_factory):
    srv = server_factory(risk=RISK, admins={"ops": HASH}).start()
    ad = Admin(srv)
    fund(ad, acct1="20000", acct2="1000000", acct3="500")
    ad.ok("mark", symbol="BTCUSDT", price="50000.00")
    ad.ok("mark", symbol="AAPL", price="190.00")
    ad.ok("set_limit", scope="default", kind="max_leverage", value="5")        # the config says 10
    ad.ok("set_limit", scope="account", target="acct1", kind="max_order_value", value="100000")
    ad.ok("set_limit", scope="symbol", target="BTCUSDT", kind="taker_fee", value="0.0005")
    ad.ok("set_limit", scope="symbol", target="BTCUSDT", kind="external_mark", value="true")   # marks: admin only

    async def trade():
        async with connect(srv, 1) as c1, connect(srv, 2) as c2:
            assert (await c2.place("BTCUSDT", "sell", "1.500", price="50000.00")).kind == "accepted"
            assert (await c1.place("BTCUSDT", "buy", "1.000", price="50000.00")).kind == "accepted"
            assert (await c1.place("AAPL", "buy", 10, price="189.00")).kind == "accepted"
            r = await c1.place("BTCUSDT", "buy", "2.100", price="50000.00")        # 105,000 > 100,000
            assert (r.kind, r.reason) == ("rejected", "MAX_ORDER_VALUE")
    asyncio.run(trade())
    ad.ok("account_state", account="acct2", state="reduce_only")
    ad.ok("restrict", account="acct1", symbol="AAPL")
    ad.ok("kill", account="acct3", switch="on")
    ad.ok("mark", symbol="BTCUSDT", price="49000.00")

    def picture():
        a = Admin(srv)
        out = {n: (a.ok("portfolio", account=n)["portfolio"], a.ok("positions", account=n)["positions"])
               for n in ("acct1", "acct2", "acct3")}
        out["limits"] = a.ok("limits")["limits"]
        out["risk"] = a.ok("status")["status"]["risk"]

        async def sdk():
            async with connect(srv, 1) as c1:
                return await c1.portfolio(), await c1.positions(), await c1.open_orders()
        out["sdk"] = asyncio.run(sdk())
        return out

    before = picture()
    assert before["acct1"][0]["unrealized"] == "-1000.00" and before["acct2"][0]["state"] == "reduce_only"
    assert before["risk"]["killed_accounts"] == ["acct3"] and len(before["sdk"][2]) == 1
    srv.kill9()
    srv.start()
    assert picture() == before
    assert srv.terminate() == 0                           # and once more from the shutdown snapshot
    srv.start()
    assert picture() == before
    limits = {(x["scope"], x["target"], x["kind"]): x["value"] for x in before["limits"]}
    assert limits[("default", None, "max_leverage")] == "5.0000"     # the operator's, not the config's 10
    config = [r for r in journal_rows(srv, "--event-type", "set_limit") if r["operator"] == 0]
    assert len(config) == CONFIG_LIMITS                   # journaled once, at the first start


# -- the demo config --

def test_demo_config_when_served_without_config_then_readme_order_accepted_and_oversize_rejected(tmp_path):
    with open("/tmp/trading-engine-demo-ports.lock", "w") as lock:      # 7001-7003 are fixed: one demo at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        for port in (7001, 7002):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    pytest.skip(f"port {port} is in use on this machine: the demo config needs it")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            while json.loads(proc.stderr.readline())["event"] != "listening":     # the log: one JSON object a line
                pass

            async def go():
                async with Client.connect("127.0.0.1", 7001, account=1, secret="demo-secret-0001") as c:
                    ack = await c.place("BTCUSDT", "buy", "1.5", price="45000.00")   # README: 67,500
                    assert ack.kind == "accepted", ack
                    big = await c.place("BTCUSDT", "buy", "5.6", price="45000.00")   # 252,000 > 250,000
                    assert (big.kind, big.reason) == ("rejected", "MAX_ORDER_VALUE")
                    pf = await c.portfolio()
                    assert pf.cash == D("1000000.00") and pf.open_orders == 1
                async with Client.connect("127.0.0.1", 7001, account=4, secret="demo-secret-0004") as c:
                    r = await c.place("BTCUSDT", "buy", "1.5", price="45000.00")     # demo4: the prototype's cap
                    assert (r.kind, r.reason) == ("rejected", "MAX_ORDER_VALUE")
            asyncio.run(go())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


# -- an account added at run time --

def test_add_account_when_added_at_run_time_then_logs_on_trades_and_survives_restart(server_factory):
    srv = server_factory(risk=RISK, admins={"ops": HASH}).start()
    secret = "a-new-fund-secret-0123456789"
    rc, out = admin_cli(srv, "add_account", "fund7", "--stp-group", "9", TRADING_ENGINE_NEW_ACCOUNT_SECRET=secret)
    assert rc == 0 and out["account"] == {"id": 5, "name": "fund7", "stp_group": 9}, out
    assert out["events"] == [{"event": "account_added", "account": "fund7", "stp_group": 9}]
    ad = Admin(srv)
    assert ad("add_account", name="fund7", secret=secret)["error"] == "account name 'fund7' is taken"
    assert ad("add_account", name="fund8", id=1, secret=secret)["error"].startswith("account id 1: taken")
    assert "at least 16" in ad("add_account", name="fund8", secret="short")["error"]
    keys = srv.dir / "journal" / ADDED_ACCOUNTS
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    fund(ad, fund7="100000", acct2="100000")
    ad.ok("mark", symbol="BTCUSDT", price="50000.00")

    async def session(first):
        async with connect(srv, 5, secret) as c, connect(srv, 2) as c2:
            if first:
                assert (await c2.place("BTCUSDT", "sell", "0.500", price="50000.00")).kind == "accepted"
                assert (await c.place("BTCUSDT", "buy", "0.200", price="50000.00")).kind == "accepted"
            else:
                assert (await c.place("BTCUSDT", "buy", "0.300", price="50000.00")).kind == "accepted"
            return await c.positions(), await c.portfolio()
    (p,), pf = asyncio.run(session(True))
    assert (p.position, pf.cash) == (D("0.200"), D("100000.00"))
    with pytest.raises(ServerError, match="AUTH_FAILED"):
        asyncio.run(logon(srv, 5, "not-the-secret-at-all"))
    # an entry whose ADD_ACCOUNT never reached the journal (a crash between the two writes) is dropped
    data = json.loads(keys.read_text())
    data["accounts"].append({"id": 9, "name": "ghost", "stp_group": 0, "key": signing_key(b"g" * 16).hex()})
    keys.write_text(json.dumps(data))
    srv.kill9()
    srv.start()
    (p,), pf = asyncio.run(session(False))
    assert (p.position, pf.cash) == (D("0.500"), D("100000.00"))      # survived: logon, position, cash
    assert [a["name"] for a in json.loads(keys.read_text())["accounts"]] == ["fund7"]
    with pytest.raises(ServerError, match="AUTH_FAILED"):
        asyncio.run(logon(srv, 9, "g" * 16))
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    stored = (srv.dir / "journal" / "data.mdb").read_bytes() + srv.output().encode()
    assert secret.encode() not in stored and signing_key(secret.encode()) not in stored     # never journaled/logged
    added = [r for r in journal_rows(srv, "--event-type", "add_account,account_added")]
    assert [(r["record"], r["account"]) for r in added] == [("command", 5), ("event", 5)]
    replayed = subprocess.run([sys.executable, "-m", "engine.cli", "journal", "replay", str(srv.dir / "journal"),
                               "--config", str(srv.config)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 0, replayed.stderr
    assert re.search(r"next report seq per account: 1:\d+ 2:\d+ 3:\d+ 4:\d+ 5:\d+$", replayed.stdout, re.M)
