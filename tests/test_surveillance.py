"""`trading-engine surveil` over a real server's journal: injected episodes of wash trading (a fill
and a self-trade-prevented match between accounts of one owner), spoofing and quote stuffing among
benign flow; each episode found exactly once, nothing on the benign flow; live (--follow, started
before the flow) equals batch; a run stopped midway (at a seq, or by kill -9) and restarted
neither misses nor repeats an alert."""
import json
import os
import signal
import subprocess
import sys
import time

import msgspec
import pytest

from clients import SyncClient
from engine.journal import Journal
from engine.surveillance import Alert, Store
from engine.testing import shared_dir
from protocol.codes import EventKind
from tests.server_proc import ROOT, SECRETS, ServerProc

SURVEILLANCE = """
[surveillance]
poll_ms = 20

[[surveillance.owners]]
name = "fund-a"
accounts = [1, 2]

[[surveillance.owners]]
name = "fund-b"
accounts = [3, 4]

[surveillance.wash]
window_ms = 2000

[surveillance.spoofing]
min_qty = 50000          # 50.000 BTCUSDT
min_away = 100           # 1.00 behind the best price of its side
max_lifetime_ms = 30000

[surveillance.messaging]
window_ms = 60000
max_messages = 400
min_messages = 200
max_order_to_trade = 10

# this flow's takers sweep 100..104 and its spoofer's small bids sit at three levels: layering and momentum
# ignition would see their own patterns in it; they are tested on the LOBSTER day (below) and in
# tests/test_surveillance_more.py
[surveillance.layering]
enabled = false

[surveillance.momentum]
enabled = false
"""


def cli(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def alerts(store):
    return [json.loads(line) for line in cli("surveil", "alerts", "--store", store, "--json").stdout.splitlines()]


def flow(server):
    """Benign flow between owners, with the episodes injected into it."""
    c = {a: SyncClient.connect("127.0.0.1", server.port, account=a, secret=SECRETS[a]) for a in SECRETS}
    try:
        c[3].place("BTCUSDT", "buy", "1.000", price="99.00")              # a standing bid: the touch
        live = []
        for i in range(30):                                               # fund-b quotes, fund-a takes
            maker, taker = (3, 1) if i % 2 else (4, 2)
            price = f"{100 + i % 5}.00"
            c[maker].place("BTCUSDT", "sell", "0.010", price=price)
            c[taker].place("BTCUSDT", "buy", "0.010", price=price)
            if i % 3 == 0:
                live.append((taker, c[taker].place("BTCUSDT", "buy", "0.001", price=f"98.{i:02d}").order_id))
            if len(live) > 2:
                a, oid = live.pop(0)
                c[a].cancel(order_id=oid)
            if i == 8:      # benign look-alike of spoofing: a large ask far away, cancelled, no trade
                big = c[4].place("BTCUSDT", "sell", "80.000", price="120.00")
                c[4].cancel(order_id=big.order_id)
            if i == 10:     # spoofing: large bids behind the touch, fund-a sells meanwhile, bids cancelled
                b1 = c[2].place("BTCUSDT", "buy", "60.000", price="95.00")
                b2 = c[2].place("BTCUSDT", "buy", "70.000", price="94.00")
                c[1].place("BTCUSDT", "sell", "0.010", price="99.00")
                c[2].cancel(order_id=b1.order_id)
                c[2].cancel(order_id=b2.order_id)
            if i == 15:     # wash: fund-a on both sides of a fill
                c[1].place("AAPL", "sell", 10, price="150.00")
                c[2].place("AAPL", "buy", 10, price="150.00")
            if i == 18:     # wash attempt that self-trade prevention stopped (fund-b, one STP group)
                s = c[3].place("AAPL", "sell", 10, price="151.00")
                c[4].place("AAPL", "buy", 10, price="151.00")
                c[3].cancel(order_id=s.order_id)
            if i == 22:     # quote stuffing: 250 messages, no trade
                for k in range(125):
                    r = c[4].place("BTCUSDT", "sell", "0.001", price=f"{110 + k % 7}.00")
                    c[4].cancel(order_id=r.order_id)
        for a, oid in live:
            c[a].cancel(order_id=oid)
    finally:
        for x in c.values():
            x.close()


def last_seq(journal):
    j = Journal(str(journal), readonly=True)
    try:
        return j.last_seq
    finally:
        j.env.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The flow on a server, with `surveil --follow` started before it; the journal, the config and
    the follow store."""
    tmp = tmp_path_factory.mktemp("surveil")
    server = ServerProc(tmp / "srv", durability="async", extra=SURVEILLANCE).start()
    journal, follow = server.dir / "journal", tmp / "follow"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "surveil", journal, "--config", server.config,
                             "--store", follow, "--follow"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        flow(server)
        end = last_seq(journal)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if os.path.exists(follow / "data.mdb"):
                try:
                    store = Store(str(follow), readonly=True)
                except SystemExit:        # data.mdb made, its databases not yet committed
                    store = None
                if store is not None:
                    cur = store.cursor()
                    store.close()
                    if cur is not None and cur.next_seq > end:
                        break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()
    return dict(tmp=tmp, journal=journal, config=server.config, follow=follow, printed=out, end=end)


@pytest.fixture(scope="module")
def batch(run):
    store = run["tmp"] / "batch"
    cli("surveil", run["journal"], "--config", run["config"], "--store", store)
    return alerts(store)


def test_surveil_when_episodes_injected_then_each_found_once_and_none_on_benign_flow(batch):
    got = sorted((a["type"], a["owner"], a["symbol"]) for a in batch)
    assert got == [("excessive_messaging", "fund-b", 0), ("spoofing", "fund-a", 1),
                   ("wash_trade", "fund-a", 2), ("wash_trade", "fund-b", 2)], batch
    by = {(a["type"], a["owner"]): a for a in batch}
    wash = by["wash_trade", "fund-a"]
    assert wash["severity"] == "high" and wash["accounts"] == [1, 2]
    assert [e["finding"] for e in wash["evidence"]] == ["opposite_orders", "fill"]
    assert wash["evidence"][1]["price"] == 1500000 and wash["evidence"][1]["qty"] == 10
    stp = by["wash_trade", "fund-b"]
    assert [e["finding"] for e in stp["evidence"]] == ["opposite_orders", "stp_prevented"]
    assert (stp["severity"], stp["accounts"]) == ("medium", [3, 4])
    spoof = by["spoofing", "fund-a"]
    order = spoof["evidence"][0]
    assert (order["side"], order["price"], order["qty"], order["filled"]) == ("buy", 9500, 60000, 0)
    assert [e["price"] for e in spoof["evidence"][1:]] == [9900]     # fund-a's sell hit the touch
    assert spoof["window_start_ns"] == order["placed_ts_ns"] < spoof["window_end_ns"] == order["cancelled_ts_ns"]
    stuff = by["excessive_messaging", "fund-b"]
    assert stuff["accounts"] == [4] and stuff["evidence"][0]["messages"] == 200
    assert stuff["evidence"][0]["trades"] < 20


def test_surveil_when_following_live_then_same_alerts_as_batch(run, batch):
    assert alerts(run["follow"]) == batch
    assert [json.loads(line) for line in run["printed"].splitlines()] == batch


def test_surveil_when_stopped_at_any_seq_and_restarted_then_nothing_missed_or_repeated(run, batch):
    j = Journal(str(run["journal"]), readonly=True)
    try:
        accepted_large = [int(e["seq"]) for _, events in j.read_from(1) for e in events
                          if e["kind"] == EventKind.ACCEPTED and e["qty"] >= 50000]
    finally:
        j.env.close()
    # cuts inside the spoofing episode (between the large bids and their cancels) and spread over the day
    cuts = sorted({*(s + 1 for s in accepted_large), *range(5, run["end"], run["end"] // 5)})
    store = run["tmp"] / "cut"
    for cut in cuts:
        cli("surveil", run["journal"], "--config", run["config"], "--store", store, "--until-seq", cut)
    cli("surveil", run["journal"], "--config", run["config"], "--store", store)
    assert alerts(store) == batch


def follow_killed(journal, config, store, lines: int) -> list[str]:
    """`surveil --follow` killed (-9) once it has printed that many alerts (each printed once stored)."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "surveil", journal, "--config", config,
                             "--store", store, "--follow"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        printed = [proc.stdout.readline() for _ in range(lines)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return [p for p in printed if p]


def test_surveil_when_killed_midway_then_restart_misses_and_repeats_nothing(run, batch):
    store = run["tmp"] / "killed"
    assert follow_killed(run["journal"], run["config"], store, 1)       # one alert printed (once stored)
    cli("surveil", run["journal"], "--config", run["config"], "--store", store)
    assert alerts(store) == batch


def test_surveil_when_killed_with_state_behind_stored_alerts_then_restart_replays_without_repeating(run, batch):
    """surveil stores its alerts (and how far they reach) every cycle but its State only every
    state_commit_ms: killed (-9) with every alert stored and printed but no State, the restart replays from
    the start and must print and store each alert once: nothing missed, nothing repeated."""
    config = run["tmp"] / "slow_state.toml"
    text = open(run["config"]).read()
    assert "poll_ms = 20\n" in text
    config.write_text(text.replace("poll_ms = 20\n", "poll_ms = 20\nstate_commit_ms = 3600000\n", 1))
    store = run["tmp"] / "state_behind"
    printed = [json.loads(line) for line in follow_killed(run["journal"], config, store, len(batch))]
    s = Store(str(store), readonly=True)
    try:
        cur, reach = s.cursor(), s.reach()
    finally:
        s.close()
    assert cur is None and reach > run["end"]          # the alerts stored, the State not: a replay from seq 1
    r = cli("surveil", run["journal"], "--config", config, "--store", store)
    printed += [json.loads(line) for line in r.stdout.splitlines()]
    assert printed == batch and alerts(store) == batch
    s = Store(str(store), readonly=True)
    try:
        assert s.cursor().next_seq == s.reach() == reach
    finally:
        s.close()


def test_surveil_when_store_resumes_elsewhere_or_is_the_journal_then_refused(run, batch):
    store = run["tmp"] / "batch"
    r = cli("surveil", run["journal"], "--config", run["config"], "--store", store, "--from-seq", 3, check=False)
    assert r.returncode == 2 and "resumes at seq" in r.stderr
    r = cli("surveil", run["journal"], "--config", run["config"], "--store", run["journal"], check=False)
    assert r.returncode == 2 and "journal" in r.stderr


def test_surveil_when_store_truncated_then_refused_naming_it_not_sigbus(run, batch):
    data = run["tmp"] / "batch" / "data.mdb"
    assert os.path.getsize(data) > 8192
    os.truncate(data, 8192)
    for args in (("surveil", "alerts", "--store", data.parent),
                 ("surveil", run["journal"], "--config", run["config"], "--store", data.parent)):
        r = cli(*args, check=False)
        assert r.returncode == 1 and "truncated" in r.stderr and str(data) in r.stderr, (r.returncode, r.stderr)


def test_config_when_surveillance_key_unknown_then_error(tmp_path):
    from engine import config as cfgmod
    p = tmp_path / "c.toml"
    p.write_text("[surveillance.spoofing]\nmin_qtty = 5\n")
    with pytest.raises(cfgmod.ConfigError, match="min_qtty"):
        cfgmod.load(p)
    p.write_text('[[surveillance.owners]]\nname = "a"\naccounts = [1]\n[[surveillance.owners]]\nname = "b"\n'
                 'accounts = [1]\n')
    with pytest.raises(cfgmod.ConfigError, match="owners"):
        cfgmod.load(p)


@pytest.mark.skipif(not (shared_dir() / "data" / "lobster" / "AMZN_5_augmented.csv.gz").exists(),
                    reason="LOBSTER sample not found in ../shared/data/lobster")
def test_surveil_when_episodes_injected_into_lobster_day_then_all_found_and_no_false_alert(tmp_path):
    from perf import surveillance as ps
    injected, background, _ = ps.build(str(tmp_path / "journal"), episodes=3)
    (tmp_path / "config.toml").write_text(ps.CONFIG.format(min_qty=2000, max_messages=250, min_messages=100,
                                                           momo_bps=5, momo_qty=1000, close_bps=5))
    cli("surveil", tmp_path / "journal", "--config", tmp_path / "config.toml", "--store", tmp_path / "store")
    got = ps.score(injected, [msgspec.convert(a, Alert) for a in alerts(tmp_path / "store")])
    assert background > 90_000
    assert {t: (n, found, len(false)) for t, (n, found, false) in got.items()} == \
        {"wash_trade": (3, 3, 0), "spoofing": (3, 3, 0), "excessive_messaging": (3, 3, 0), "layering": (3, 3, 0),
         "momentum_ignition": (3, 3, 0), "marking_the_close": (1, 1, 0)}
