"""The compliance flags of `trading-engine surveil` (large orders and positions in flag mode, from the
journaled LARGE_* limits), and the cut-anywhere resume of the newer detectors on the LOBSTER day."""
import asyncio
import json
import subprocess
import sys

import pytest

from engine.testing import shared_dir
from tests.server_proc import ROOT
from tests.test_risk_server import HASH, RISK, Admin, connect, fund


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def alerts(store):
    return [json.loads(line) for line in cli("surveil", "alerts", "--store", store, "--json").splitlines()]


def test_large_when_flag_mode_then_orders_and_positions_above_thresholds_alerted_once(server_factory, tmp_path):
    srv = server_factory(risk=RISK, admins={"ops": HASH},
                         symbol_extra='[symbols.limits]\nlarge_order_qty = "1.000"\nlarge_position_qty = "1.500"\n'
                         ).start()
    ad = Admin(srv)
    fund(ad, acct1="1000000", acct2="1000000")
    ad.ok("mark", symbol="BTCUSDT", price="50000.00")

    async def flow():
        async with connect(srv, 1) as c1, connect(srv, 2) as c2:
            assert (await c2.place("BTCUSDT", "sell", "4.000", price="50000.00")).kind == "accepted"   # large
            for qty in ("0.800", "0.800", "0.500"):        # 0.8, 1.6 (above 1.5: once), 2.1 (still above)
                assert (await c1.place("BTCUSDT", "buy", qty, price="50000.00")).kind == "accepted"
            assert (await c2.place("BTCUSDT", "buy", "1.000", price="49000.00")).kind == "accepted"
            assert (await c1.place("BTCUSDT", "sell", "1.000", price="49000.00")).kind == "accepted"  # 1.1
            assert (await c1.place("BTCUSDT", "buy", "0.500", price="50000.00")).kind == "accepted"   # 1.6 again
    asyncio.run(flow())
    srv.stop()
    cli("surveil", srv.dir / "journal", "--config", srv.config, "--store", tmp_path / "store")
    got = alerts(tmp_path / "store")
    assert [(a["type"], a["accounts"]) for a in got] == [
        ("large_order", [2]), ("large_position", [1]), ("large_position", [2]), ("large_position", [1]),
        ("large_position", [2])]
    assert (got[0]["evidence"][0]["qty"], got[0]["evidence"][0]["threshold"]) == (4000, 1000)
    pos = [a["evidence"][0] for a in got[1:]]
    assert [(p["position"], p["before"]) for p in pos] == [(1600, 800), (-1600, -800), (1600, 1100), (-1600, -1100)]



def test_large_position_when_owner_accounts_together_above_threshold_then_owner_alerted_once_per_crossing(
        server_factory, tmp_path):
    """Accounts 1 and 2 of one owner each hold 1.0 (below 1.5): their owner holds 2.0, above it. A trade
    between the two changes nothing for the owner; back to 1.0 re-arms it."""
    srv = server_factory(risk=RISK, admins={"ops": HASH},
                         symbol_extra='[symbols.limits]\nlarge_position_qty = "1.500"\n').start()
    ad = Admin(srv)
    fund(ad, acct1="1000000", acct2="1000000", acct3="1000000")
    ad.ok("mark", symbol="BTCUSDT", price="50000.00")

    async def flow():
        async with connect(srv, 1) as c1, connect(srv, 2) as c2, connect(srv, 3) as c3:
            assert (await c3.place("BTCUSDT", "sell", "1.400", price="50000.00")).kind == "accepted"
            assert (await c1.place("BTCUSDT", "buy", "1.000", price="50000.00")).kind == "accepted"   # owner 1.0
            assert (await c2.place("BTCUSDT", "buy", "0.400", price="50000.00")).kind == "accepted"   # owner 1.4
            assert (await c3.place("BTCUSDT", "sell", "1.000", price="50000.00")).kind == "accepted"
            assert (await c2.place("BTCUSDT", "buy", "0.400", price="50000.00")).kind == "accepted"   # 1.8: alert
            assert (await c1.place("BTCUSDT", "sell", "0.300", price="49990.00")).kind == "accepted"
            assert (await c2.place("BTCUSDT", "buy", "0.300", price="49990.00")).kind == "accepted"   # 1 to 2: 1.8
            assert (await c1.place("BTCUSDT", "sell", "0.500", price="49000.00")).kind == "accepted"
            assert (await c3.place("BTCUSDT", "buy", "0.500", price="49000.00")).kind == "accepted"   # owner 1.3
            assert (await c2.place("BTCUSDT", "buy", "0.300", price="50000.00")).kind == "accepted"   # 1.6: alert
    asyncio.run(flow())
    srv.stop()
    cfg = tmp_path / "config.toml"
    cfg.write_text(open(srv.config).read() + '\n[[surveillance.owners]]\nname = "fund-a"\naccounts = [1, 2]\n')
    cli("surveil", srv.dir / "journal", "--config", cfg, "--store", tmp_path / "store")
    got = [a for a in alerts(tmp_path / "store") if a["type"] == "large_position"]
    assert [(a["owner"], a["accounts"]) for a in got] == [("account 3", [3]), ("fund-a", [1, 2]), ("account 3", [3]),
                                                           ("fund-a", [1, 2])]
    got = [a for a in got if a["owner"] == "fund-a"]
    ev = [a["evidence"] for a in got]
    assert [(e[0]["finding"], e[0]["position"], e[0]["before"], e[0]["threshold"]) for e in ev] == [
        ("owner_position", 1800, 1400, 1500), ("owner_position", 1600, 1300, 1500)]
    assert [[(x["account"], x["position"]) for x in e[1:]] for e in ev] == [[(1, 1000), (2, 800)],
                                                                          [(1, 200), (2, 1400)]]


@pytest.mark.skipif(not (shared_dir() / "data" / "lobster" / "AMZN_5_augmented.csv.gz").exists(),
                    reason="LOBSTER sample not found in ../shared/data/lobster")
def test_new_detectors_when_stopped_inside_episodes_and_resumed_then_same_alerts_as_one_run(tmp_path):
    from perf import surveillance as ps
    injected, _, end = ps.build(str(tmp_path / "journal"), episodes=2)
    cfg = tmp_path / "config.toml"
    cfg.write_text(ps.CONFIG.format(min_qty=2000, max_messages=250, min_messages=100, momo_bps=5, momo_qty=1000,
                                    close_bps=5))
    cli("surveil", tmp_path / "journal", "--config", cfg, "--store", tmp_path / "one")
    one = alerts(tmp_path / "one")
    assert {a["type"] for a in one} >= {"layering", "momentum_ignition", "marking_the_close"}
    cuts = sorted({first + 2 for typ, _, first, _ in injected if typ != "wash_trade"})   # inside each episode
    for cut in cuts:
        cli("surveil", tmp_path / "journal", "--config", cfg, "--store", tmp_path / "cut", "--until-seq", cut)
    cli("surveil", tmp_path / "journal", "--config", cfg, "--store", tmp_path / "cut")
    assert alerts(tmp_path / "cut") == one


def large_orders(server_factory, n):
    """A server whose account 2 placed n large orders (n large_order alerts); its admin connection."""
    srv = server_factory(risk=RISK, admins={"ops": HASH},
                         symbol_extra='[symbols.limits]\nlarge_order_qty = "1.000"\n').start()
    ad = Admin(srv)
    fund(ad, acct2="1000000")
    ad.ok("mark", symbol="BTCUSDT", price="50000.00")

    async def flow():
        async with connect(srv, 2) as c2:
            for _ in range(n):
                assert (await c2.place("BTCUSDT", "sell", "2.000", price="60000.00")).kind == "accepted"
    asyncio.run(flow())
    return srv, ad


def test_disposition_when_recorded_by_admin_then_journaled_with_operator_in_store_trail_and_counted(
        server_factory, tmp_path):
    import os
    import signal
    import socket
    import time
    import urllib.request

    from engine.core import Engine
    from protocol.codes import CommandKind, EventKind, Reject

    srv, ad = large_orders(server_factory, 2)
    store = tmp_path / "store"
    cli("surveil", srv.dir / "journal", "--config", srv.config, "--store", store)
    first, second = [a["id"] for a in alerts(store)]
    out = ad.ok("disposition", alert=first, state="escalated")
    assert out["events"] == [{"event": "alert_disposition", "alert": first, "disposition": "escalated"}]
    ad.ok("disposition", alert=first, state="dismissed")
    assert "an alert id" in ad("disposition", alert="nonsense:1", state="reviewed")["error"]
    assert "one of reviewed" in ad("disposition", alert=first, state="ignored")["error"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "surveil", srv.dir / "journal", "--config",
                             srv.config, "--store", store, "--follow", "--metrics-port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                if 'te_surveillance_dispositions_total{disposition="dismissed"} 1.0' in text:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.1)
        assert 'te_surveillance_alerts_total{type="large_order"} 2.0' in text
        assert 'te_surveillance_alerts_total{type="spoofing"} 0.0' in text
        assert 'te_surveillance_dispositions_total{disposition="escalated"} 1.0' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    got = {a["id"]: a for a in alerts(store)}
    assert [(d["disposition"], d["operator"]) for d in got[first]["dispositions"]] == [("escalated", 1),
                                                                                     ("dismissed", 1)]
    assert "dispositions" not in got[second]
    trail = [json.loads(line) for line in cli("surveil", "alerts", "--store", store, "--dispositions").splitlines()]
    assert [d["alert"] for d in trail] == [first, first] and trail[0]["seq"] < trail[1]["seq"]
    table = cli("surveil", "alerts", "--store", store)
    assert [line.split()[-1] for line in table.splitlines()[1:]] == ["dismissed", "open"]
    # the engine refuses a malformed one (the admin's checks aside), reported to no account
    e = Engine(max_orders=16, max_accounts=4, max_symbols=2, max_levels=8)
    evs = e.command(kind=CommandKind.ALERT_DISPOSITION, order_id=5, qty=0, order_type=1, side=9)
    assert [(x.kind, x.reason, x.account) for x in evs] == [(EventKind.REJECTED, Reject.INVALID_DISPOSITION, 0)]
    evs = e.command(kind=CommandKind.ALERT_DISPOSITION, order_id=5, qty=0, order_type=1, side=2)
    assert [(x.kind, x.order_id, x.side) for x in evs] == [(EventKind.ALERT_DISPOSITION, 5, 2)]
    assert os.path.exists(store / "data.mdb")


@pytest.mark.skipif(not (shared_dir() / "data" / "lobster" / "AMZN_5_augmented.csv.gz").exists(),
                    reason="LOBSTER sample not found in ../shared/data/lobster")
def test_messaging_quiet_path_when_times_in_order_or_going_back_then_same_alerts_and_state_as_every_message(
        tmp_path):
    """The messaging fast path (quiet accounts' windows updated once per chunk) against every message
    through message(), over the LOBSTER day with tight messaging limits over 60 s windows (real accounts
    breach too), as journaled and with every 40th chunk and the second half of every 40th other 15 s back
    (the fast path must step aside there and after)."""
    import msgspec

    from engine import config as cfgmod
    from engine import surveillance as sv
    from engine.journal import Journal
    from perf import surveillance as ps
    ps.build(str(tmp_path / "journal"), episodes=2)
    cfg = tmp_path / "config.toml"
    cfg.write_text(ps.CONFIG.format(min_qty=500, max_messages=60, min_messages=25, momo_bps=5, momo_qty=1000,
                                    close_bps=5) + "window_ms = 60000\n")
    conf = cfgmod.load(str(cfg)).surveillance
    chunks, back = _chunks_as_journaled_and_back(tmp_path / "journal")
    quiet_chunks = []
    for data in (chunks, back):
        fast, every = sv.Detectors(conf), sv.Detectors(conf, quiet_path=False)
        nxt = 1
        for c, e in data:                   # in step: the same alerts and state after each chunk
            prev, nxt = nxt, fast.feed(c, e, nxt, None)
            assert every.feed(c, e, prev, None) == nxt
            assert msgspec.json.encode(fast.found) == msgspec.json.encode(every.found)
            assert msgspec.to_builtins(fast.s) == msgspec.to_builtins(every.s)
        assert any(a.type == "excessive_messaging" for a in fast.found) and every.quiet_chunks == 0
        quiet_chunks.append(fast.quiet_chunks)
    # the fast path ran in most chunks, and stepped aside where the times went back (and after, while unsorted)
    assert len(chunks) * 9 // 10 <= quiet_chunks[0] < len(chunks) and len(chunks) // 4 <= quiet_chunks[1] < \
        quiet_chunks[0] - len(chunks) // 20


def _chunks_as_journaled_and_back(path):
    """The journal's chunks (commands, events), and a copy with every 40th chunk and the second half of
    every 40th other 15 s back."""
    from engine.journal import Journal
    j = Journal(str(path), readonly=True)
    chunks = [(c.copy(), e.copy()) for c, e in j.read_from(1)]
    j.env.close()
    back = []
    for n, (c, e) in enumerate(chunks):
        c, e = c.copy(), e.copy()
        if n % 40 == 19:                    # the whole chunk 15 s back
            c["ts_ns"] -= 15 * 10**9
            e["ts_ns"] -= 15 * 10**9
        elif n % 40 == 39:                  # its second half 15 s back (events at their commands' times)
            half = c["seq"][len(c) // 2]
            c["ts_ns"][c["seq"] >= half] -= 15 * 10**9
            e["ts_ns"][e["seq"] >= half] -= 15 * 10**9
        back.append((c, e))
    return chunks, back


@pytest.mark.skipif(not (shared_dir() / "data" / "lobster" / "AMZN_5_augmented.csv.gz").exists(),
                    reason="LOBSTER sample not found in ../shared/data/lobster")
def test_native_core_when_fed_lobster_day_then_same_alerts_and_state_as_plain_path_after_every_chunk(tmp_path):
    """engine/surveil_core.pyx (Detectors(native=True), what `surveil` runs) against the plain Python path, in
    step over the LOBSTER day with loose thresholds (every detector fires on the background too: 1,500
    alerts) and owners of two accounts, as journaled and with times going back: the same alerts, byte for
    byte, and the same whole state (what the cursor stores) after every chunk; and a native run restarted
    from its stored cursor every 97 chunks goes on exactly as the uninterrupted one."""
    import msgspec

    from engine import config as cfgmod
    from engine import surveillance as sv
    from perf import surveillance as ps
    ps.build(str(tmp_path / "journal"), episodes=2)
    cfg = tmp_path / "config.toml"
    cfg.write_text(ps.CONFIG.format(min_qty=500, max_messages=60, min_messages=25, momo_bps=3, momo_qty=300,
                                    close_bps=3) + "window_ms = 60000\n[surveillance.wash]\nwindow_ms = 5000\n"
                   "[[surveillance.owners]]\nname = \"makers\"\naccounts = [1, 2, 3]\n"
                   "[[surveillance.owners]]\nname = \"maker-taker\"\naccounts = [4, 21]\n")
    conf = cfgmod.load(str(cfg)).surveillance
    chunks, back = _chunks_as_journaled_and_back(tmp_path / "journal")
    for data in (chunks, back):
        native, plain, resumed = (sv.Detectors(conf, native=True), sv.Detectors(conf),
                                  sv.Detectors(conf, native=True))
        nxt = 1
        for n, (c, e) in enumerate(data):
            prev, nxt = nxt, native.feed(c, e, nxt, None)
            assert plain.feed(c, e, prev, None) == nxt and resumed.feed(c, e, prev, None) == nxt
            assert msgspec.json.encode(native.found) == msgspec.json.encode(plain.found)
            assert msgspec.json.encode(resumed.found) == msgspec.json.encode(plain.found)
            assert msgspec.to_builtins(native.sync()) == msgspec.to_builtins(plain.s)
            if n % 97 == 96:                # a restart: the cursor as the store writes and reads it
                raw = msgspec.msgpack.encode(sv.Cursor(next_seq=nxt, state=resumed.sync()))
                resumed = sv.Detectors(conf, msgspec.msgpack.decode(raw, type=sv.Cursor).state, native=True)
                resumed.found = list(plain.found)
        assert {a.type for a in plain.found} >= {"wash_trade", "spoofing", "excessive_messaging", "layering",
                                                 "momentum_ignition", "marking_the_close"}
