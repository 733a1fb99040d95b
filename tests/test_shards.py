"""Symbol shards end to end (engine/SCALING.md "Symbol shards"): two real servers, shard a owning
BTCUSDT and shard b owning AAPL, one shard directory shared by the servers, the SDK
(clients.ShardedClient) and the coordinator (`trading-engine shards`); kill -9 for crashes.

Money (BTCUSDT notional = price x qty; cash in cents): account 1 deposits 20,000, split 10,000 per
shard. With initial margin 10% and leverage 10x, bids of 1,000 BTCUSDT at 100.00 (notional
100,000) take shard a's whole 10,000; 500 more need 5,000 that only shard b has."""
import asyncio
import json
import os
import subprocess
import sys
from decimal import Decimal as D

import pytest

from clients import Client, ShardedClient, SyncClient, SyncShardedClient
from engine.shards import CRASH_AFTER_FIRST_LEG
from tests.server_proc import ROOT, SECRETS
from tests.test_risk_server import HASH, PASSWORD, RISK, Admin

CENTS = 100


def directory_text(ports=None):
    ports = ports or {"a": (1, 1), "b": (1, 1)}         # (a server reads only the symbols and names)
    return "".join(f'[[shards]]\nname = "{n}"\naddress = "127.0.0.1:{p}"\nadmin = "127.0.0.1:{q}"\n'
                   f'symbols = [{sym}]\n\n' for n, (p, q), sym in
                   (("a", ports["a"], '"BTCUSDT"'), ("b", ports["b"], '"AAPL"')))


@pytest.fixture
def shards(server_factory, tmp_path):
    """Shards a and b running, the directory at tmp_path/shards.toml naming their ports, marks set."""
    d = tmp_path / "shards.toml"
    d.write_text(directory_text())
    procs = {}
    for name in ("a", "b"):
        procs[name] = server_factory(risk=RISK, admins={"ops": HASH}, symbol_extra='reference_price = "100.00"',
                                     account_extra='initial_deposit = "20000"\n',
                                     extra=f'\n[shards]\nname = "{name}"\ndirectory = "{d}"\n').start()
    d.write_text(directory_text({n: (p.port, p.admin_port) for n, p in procs.items()}))
    Admin(procs["b"]).ok("mark", symbol="AAPL", price="150.0000")
    return d, procs


def run_shards(d, *args, env=None):
    e = dict(os.environ, TRADING_ENGINE_ADMIN_PASSWORD=PASSWORD, TRADING_ENGINE_ADMIN_USER="ops",
             PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "engine.cli", "shards", *args, "--directory", str(d)], env=e,
                          capture_output=True, text=True, timeout=120)


def status(d):
    r = run_shards(d, "status")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    cash = {st["shard"]: {a["id"]: a["cash"] for a in st["accounts"]} for st in out["shards"]}
    return cash, {int(k): v for k, v in out["total_cash"].items()}


def pin_ports(proc):
    """Restart on the same ports (the directory names them)."""
    text = proc.config.read_text()
    text = text.replace("\nport = 0\n", f"\nport = {proc.port}\n").replace("\nadmin_port = 0\n",
                                                                         f"\nadmin_port = {proc.admin_port}\n")
    proc.config.write_text(text)


async def exhaust(c):
    """Shard a's allocation of account 1 taken by margin: the next bid is refused."""
    assert (await c.place("BTCUSDT", "buy", "1000", price="100.00")).kind == "accepted"
    r = await c.place("BTCUSDT", "buy", "500", price="100.00")
    assert r.kind == "rejected" and r.reason in ("INSUFFICIENT_MARGIN", "MAX_LEVERAGE"), r


def test_shard_when_order_for_another_shards_symbol_then_wrong_shard_and_nothing_journaled(shards):
    d, procs = shards

    async def go():
        async with Client.connect("127.0.0.1", procs["a"].port, account=1, secret=SECRETS[1]) as c:
            r = await c.place("AAPL", "buy", "1", price="150.0000")
            assert (r.kind, r.reason, r.seq) == ("rejected", "WRONG_SHARD", 0)
            r = await c.place_algo("AAPL", "buy", "10", "twap", duration_ms=60_000)
            assert (r.kind, r.reason) == ("rejected", "WRONG_SHARD")
            ok = await c.place("BTCUSDT", "buy", "1", price="100.00")      # its own symbol: traded
            assert ok.kind == "accepted"
            assert (await c.book("BTCUSDT")).bids[0].qty == D("1")
    asyncio.run(go())
    cash, total = status(d)
    assert cash == {"a": {1: 10_000 * CENTS, 2: 10_000 * CENTS, 3: 10_000 * CENTS, 4: 10_000 * CENTS},
                    "b": {1: 10_000 * CENTS, 2: 10_000 * CENTS, 3: 10_000 * CENTS, 4: 10_000 * CENTS}}
    assert total[1] == 20_000 * CENTS            # the initial deposit split over the shards, exactly


def test_sdk_when_two_shards_then_orders_routed_by_symbol_and_reports_merged(shards):
    d, procs = shards

    async def go():
        async with ShardedClient.connect(d, account=1, secret=SECRETS[1]) as c:
            btc = await c.place("BTCUSDT", "buy", "1", price="100.00")
            aapl = await c.place("AAPL", "sell", "5", price="151.0000")
            assert btc.kind == aapl.kind == "accepted"
            assert btc.order_id == aapl.order_id == 1              # per-shard ids: named with their symbol
            assert btc.client_order_id != aapl.client_order_id     # one counter over the shards
            assert [o.symbol for o in await c.open_orders()] == ["BTCUSDT", "AAPL"]
            assert (await c.book("AAPL")).asks[0].qty == D("5")
            assert (await c.book("BTCUSDT")).bids[0].qty == D("1")
            cx = await c.cancel(order_id=1, symbol="AAPL")           # at b: a's order 1 stays
            assert (cx.kind, cx.symbol) == ("cancelled", "AAPL")
            cx = await c.cancel(client_order_id=btc.client_order_id)
            assert (cx.kind, cx.symbol) == ("cancelled", "BTCUSDT")
            seen = []
            async for shard, r in c.reports():
                if r.kind != "balance":                          # (each shard's part of the deposit comes first)
                    seen.append((shard, r.kind, r.symbol))
                if len(seen) == 4:
                    break
            assert sorted(seen) == [("a", "accepted", "BTCUSDT"), ("a", "cancelled", "BTCUSDT"),
                                    ("b", "accepted", "AAPL"), ("b", "cancelled", "AAPL")]
            with pytest.raises(ValueError):
                await c.cancel(order_id=1)                           # ambiguous across shards
    asyncio.run(go())


def test_sync_sdk_when_two_shards_then_orders_routed_by_symbol_and_reports_merged(shards):
    d, procs = shards
    with SyncShardedClient.connect(d, account=1, secret=SECRETS[1]) as c:
        assert (c.shard_of("BTCUSDT"), c.shard_of("AAPL")) == ("a", "b")
        btc = c.place("BTCUSDT", "buy", "1", price="100.00")
        aapl = c.place("AAPL", "sell", "5", price="151.0000")
        assert btc.kind == aapl.kind == "accepted" and btc.client_order_id != aapl.client_order_id
        assert c.book("AAPL").asks[0].qty == D("5") and c.book("BTCUSDT").bids[0].qty == D("1")
        assert c.order(order_id=1, symbol="AAPL").symbol == "AAPL"
        assert c.cancel(client_order_id=btc.client_order_id).symbol == "BTCUSDT"
        assert [o.symbol for o in c.open_orders()] == ["AAPL"]
        seen = []
        for shard, r in c.reports():
            if r.kind != "balance":
                seen.append((shard, r.kind, r.symbol))
            if len(seen) == 3:
                break
        assert sorted(seen) == [("a", "accepted", "BTCUSDT"), ("a", "cancelled", "BTCUSDT"),
                                ("b", "accepted", "AAPL")]
    with SyncClient.connect("127.0.0.1", procs["b"].port, account=1, secret=SECRETS[1]) as direct:   # b after it
        assert [o.client_order_id for o in direct.open_orders()] == [aapl.client_order_id]


def test_cli_when_shards_file_then_order_book_cancel_go_to_the_owner_and_orders_gather_all(shards):
    d, procs = shards
    env = dict(os.environ, TRADING_ENGINE_SECRET=SECRETS[1], PYTHONPATH=str(ROOT), TRADING_ENGINE_ACCOUNT="1")

    def cli(*args, rc=0):
        r = subprocess.run([sys.executable, "-m", "engine.cli", *args, "--shards", str(d), "--json"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == rc, r.stdout + r.stderr
        return json.loads(r.stdout.splitlines()[0])

    placed = cli("order", "sell", "AAPL", "3", "--price", "152.0000")
    assert placed[0]["kind"] == "accepted"
    assert cli("order", "buy", "BTCUSDT", "2", "--price", "99.00")[0]["kind"] == "accepted"
    assert cli("book", "AAPL")["asks"][0]["qty"] == "3"
    assert sorted((o["symbol"], o["order_id"]) for o in cli("orders")) == [("AAPL", 1), ("BTCUSDT", 1)]
    assert cli("cancel", str(placed[0]["order_id"]), "--symbol", "AAPL")["kind"] == "cancelled"
    assert [o["symbol"] for o in cli("orders")] == ["BTCUSDT"]


def test_coordinator_when_a_shards_allocation_is_exhausted_then_cash_moves_and_the_order_passes(shards):
    d, procs = shards

    async def trade(after):
        async with ShardedClient.connect(d, account=1, secret=SECRETS[1]) as c:
            if after is None:
                await exhaust(c)
                return
            r = await c.place("BTCUSDT", "buy", "500", price="100.00")
            assert r.kind == after, r
    asyncio.run(trade(None))
    r = run_shards(d, "coordinate", "--once")
    assert r.returncode == 0, r.stderr
    cash, total = status(d)
    assert cash["a"][1] == 15_000 * CENTS and cash["b"][1] == 5_000 * CENTS and total[1] == 20_000 * CENTS
    assert cash["a"][2] == cash["b"][2] == 10_000 * CENTS       # balanced accounts are left alone
    asyncio.run(trade("accepted"))


def test_coordinator_when_killed_between_legs_then_restart_completes_the_transfer_exactly_once(shards):
    d, procs = shards

    async def go():
        async with ShardedClient.connect(d, account=1, secret=SECRETS[1]) as c:
            await exhaust(c)
    asyncio.run(go())
    r = run_shards(d, "coordinate", "--once", env={CRASH_AFTER_FIRST_LEG: "1"})
    assert r.returncode == -9, r.stderr                          # SIGKILL after the withdrawal on b
    cash, total = status(d)
    assert cash["b"][1] == 5_000 * CENTS and cash["a"][1] == 10_000 * CENTS   # 5,000 in flight
    assert total[1] == 15_000 * CENTS
    for _ in range(2):                                           # the restart completes it; again: nothing
        r = run_shards(d, "coordinate", "--once")
        assert r.returncode == 0, r.stderr
        cash, total = status(d)
        assert cash["a"][1] == 15_000 * CENTS and cash["b"][1] == 5_000 * CENTS and total[1] == 20_000 * CENTS
    # the shard remembers the leg across a snapshot and a kill -9: a repeat is a duplicate, never paid twice
    a = procs["a"]
    Admin(a).ok("snapshot")
    a.kill9()
    pin_ports(a)
    a.start()
    adm = Admin(a)
    leg = dict(account="1", amount="5000", transfer=1, direction="in", peer="b")
    assert adm.ok("transfer", **leg)["duplicate"] is True
    assert adm("transfer", **dict(leg, amount="4000"))["error"] == "TRANSFER_MISMATCH"
    assert adm("transfer", **dict(leg, transfer=0))["ok"] is False
    assert status(d)[1][1] == 20_000 * CENTS


def test_shard_when_one_is_killed_then_the_other_trades_and_the_sdk_replays_its_gap(shards):
    """b is killed; while the SDK cannot reach it (b comes back first on another port), account 2 fills
    account 1's order there; when b is back at its address the SDK logs on again and gets the fill
    by gap replay, each report once."""
    d, procs = shards
    b = procs["b"]
    ports = (b.port, b.admin_port)

    async def go():
        async with ShardedClient.connect(d, account=1, secret=SECRETS[1], reconnect=True) as c:
            rest = await c.place("AAPL", "sell", "5", price="151.0000")
            assert rest.kind == "accepted"
            b.kill9()
            assert (await c.place("BTCUSDT", "buy", "1", price="100.00")).kind == "accepted"   # a trades on
            await asyncio.to_thread(b.start)                     # (port 0: not where the SDK looks)
            async with Client.connect("127.0.0.1", b.port, account=2, secret=SECRETS[2]) as other:
                assert (await other.place("AAPL", "buy", "5", price="151.0000")).kind == "accepted"
            await asyncio.to_thread(b.terminate)
            b.port, b.admin_port = ports
            pin_ports(b)
            await asyncio.to_thread(b.start)
            got = []
            async for shard, r in c.reports():
                if shard == "b":
                    got.append((r.seq, r.kind))
                if (shard, r.kind) == ("b", "fill"):
                    break
            assert got == [(1, "balance"), (2, "accepted"), (3, "fill")]   # each once, the fill by replay
            assert c.shards["b"].reconnects == 1 and c.shards["a"].reconnects == 0
            assert c.shards["b"].gaps == []
    asyncio.run(go())


def test_config_when_directory_wrong_then_start_up_refused_naming_it(tmp_path):
    from engine import config as cfgmod
    base = (ROOT / "engine" / "default_config.toml").read_text()
    d = tmp_path / "shards.toml"
    cfg = tmp_path / "c.toml"
    cases = [
        ('[[shards]]\nname = "a"\naddress = "h:1"\nsymbols = ["BTCUSDT", "ETHUSDT"]\n', "unowned: AAPL"),
        ('[[shards]]\nname = "a"\naddress = "h:1"\nsymbols = ["BTCUSDT", "ETHUSDT", "AAPL", "XYZ"]\n', "unknown: XYZ"),
        ('[[shards]]\nname = "b"\naddress = "h:1"\nsymbols = ["BTCUSDT", "ETHUSDT", "AAPL"]\n', "is not in"),
        ('[[shards]]\nname = "a"\naddress = "h"\nsymbols = ["BTCUSDT", "ETHUSDT", "AAPL"]\n', "host:port"),
        ('[[shards]]\nname = "a"\naddress = "h:1"\nsymbols = ["BTCUSDT", "ETHUSDT", "AAPL"]\ncolour = 1\n', "colour"),
        ('[[shards]]\nname = "a"\naddress = "h:1"\nsymbols = ["BTCUSDT"]\n[[shards]]\nname = "c"\naddress = "h:2"\n'
         'symbols = ["BTCUSDT", "ETHUSDT", "AAPL"]\n', "one shard only"),
    ]
    cfg.write_text(base + '\n[shards]\nname = "a"\ndirectory = "shards.toml"\n')
    for text, message in cases:
        d.write_text(text)
        with pytest.raises(cfgmod.ConfigError, match=message):
            cfgmod.load(cfg)
    d.write_text('[[shards]]\nname = "a"\naddress = "h:1"\nsymbols = ["BTCUSDT", "AAPL"]\n'
                 '[[shards]]\nname = "b"\naddress = "h:2"\nsymbols = ["ETHUSDT"]\n')
    loaded = cfgmod.load(cfg)                        # the directory found beside the config, wherever run from
    assert cfgmod.foreign_symbols(loaded) == [s.id for s in loaded.symbols if s.name == "ETHUSDT"]


def test_transfer_when_the_same_leg_arrives_twice_at_once_then_applied_once(shards):
    """A coordinator that lost its connection sends the leg again, maybe before the first one's commit."""
    d, procs = shards
    a = procs["a"]
    one, two = Admin(a), Admin(a)
    one.ok("status"), two.ok("status")                   # both authenticated: no scrypt delay in between
    leg = dict(user="ops", password=PASSWORD, action="transfer", account="2", amount="1000", transfer=7,
               direction="in", peer="b")
    line = json.dumps(leg).encode() + b"\n"
    for _ in range(5):                                   # the two requests meet before the first one's commit
        one.sock.sendall(line)
        two.sock.sendall(line)
        answers = [json.loads(one.file.readline()), json.loads(two.file.readline())]
        leg["transfer"] += 1
        line = json.dumps(leg).encode() + b"\n"
        assert all(x["ok"] for x in answers), answers
        assert sorted(bool(x.get("duplicate")) for x in answers) == [False, True], answers
    cash, _ = status(d)
    assert cash["a"][2] == (10_000 + 5 * 1000) * CENTS
