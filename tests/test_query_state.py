"""Read-only queries never change what the state hash or a snapshot covers (issue 18.4): a server
answers PORTFOLIO and POSITIONS (the SDK sends a PORTFOLIO on every connect), /metrics scrapes and
/health/detailed between orders and trades; its shutdown snapshot then equals, hash and every
engine array byte for byte, a replay of its journal."""
import asyncio
import re
import subprocess
import sys

import numpy as np

from engine import config as cfgmod, snapshot
from engine.journal import Journal
from engine.server import engine_from_config
from tests.server_proc import ROOT
from tests.test_ops import get
from tests.test_risk_server import connect, trading_server


def test_queries_when_interleaved_with_trading_then_snapshot_equals_a_replay(server_factory):
    srv, ad = trading_server(server_factory)

    def scrape():
        assert get(srv, "/metrics")[0] == 200
        assert get(srv, "/health/detailed")[0] == 200

    async def go():
        async with connect(srv, 1) as a, connect(srv, 2) as b:
            for i in range(6):
                price = f"{50000 + 10 * i}.00"
                assert (await a.place("BTCUSDT", "sell", "0.010", price=price)).kind == "accepted"
                await a.portfolio()
                scrape()
                assert (await b.place("BTCUSDT", "buy", "0.010", price=price)).kind == "accepted"
                await b.positions()
                await asyncio.sleep(0.06)          # a RISK_TICK moves the mark: every cached figure stale
                await a.positions()
                await b.portfolio()
                scrape()
            ad.ok("mark", symbol="BTCUSDT", price="50100.00")
            await a.portfolio()
            await b.positions()
            scrape()
        # last, an order that leaves its account's figures stale (no command re-values it: AAPL never
        # trades, so no RISK_TICK re-marks it), then only queries
        ad.ok("deposit", account="acct3", amount="100000")
        ad.ok("mark", symbol="AAPL", price="150.0000")
        async with connect(srv, 3) as c:
            assert (await c.place("AAPL", "buy", 10, price="149.00")).kind == "accepted"
            await c.portfolio()
            await c.positions()
            scrape()
    asyncio.run(go())
    assert srv.terminate() == 0                    # the shutdown snapshot, after all those queries
    journal = srv.dir / "journal"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "journal", "replay", str(journal), "--config",
                        str(srv.config), "--compare-snapshot"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and re.search(r"state_hash 0x[0-9a-f]+, EQUAL", r.stdout), r.stdout + r.stderr

    path = snapshot.list_snapshots(journal / "snapshots")[0]
    last_seq, state, _ = snapshot.read(path)
    eng = engine_from_config(cfgmod.load(srv.config))
    j = Journal(str(journal), readonly=True)
    for cmds, _ in j.batches(to_seq=last_seq):
        eng.feed(np.ascontiguousarray(cmds[cmds["seq"] <= last_seq]))
        eng.clear_events()
    j.env.close()
    for name, arr in eng.export_state().items():
        assert np.asarray(arr).tobytes() == np.asarray(state[name]).tobytes(), f"snapshot array {name} differs"
