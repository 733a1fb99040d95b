"""The journal's other readers on a journal with execution algorithms in it: a parent's children appear
only as events (ALGO_CHILD) under ALGO_* commands, and `journal verify|replay|dump`, `surveil`, `report
positions|audit|tca` and `risk metrics` all read it, the positions equal to what the parent bought."""
import csv
import io
import subprocess
import sys

from protocol.wire import MsgType
from tests.server_proc import ROOT
from tests.test_algos_server import asks_then_twap
from tests.test_risk_server import HASH, RISK, Admin, fund


def test_tools_when_journal_holds_a_twap_then_each_reads_it_and_positions_match(server_factory, tmp_path):
    srv = server_factory(risk=RISK, admins={"ops": HASH}).start()
    ad = Admin(srv)
    fund(ad, acct1="100000000", acct2="100000000")
    ad.ok("mark", symbol="BTCUSDT", price="100.00")
    buyer = asks_then_twap(srv.port, duration_ms=2000, slices=4)
    t, done, _ = buyer.until(MsgType.ALGO_DONE, timeout=30)
    assert int(done["qty"]) == 600
    srv.stop()
    j, cfg = str(srv.dir / "journal"), str(srv.config)

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    cli("journal", "verify", j)
    cli("journal", "replay", j, "--config", cfg)
    assert "algo_done" in cli("journal", "dump", j, "--config", cfg)
    cli("surveil", j, "--config", cfg, "--store", str(tmp_path / "alerts"))
    rows = {(r["account"], r["symbol"]): r for r in csv.DictReader(io.StringIO(cli("report", "positions", j,
                                                                                   "--config", cfg)))}
    assert rows[("1", "BTCUSDT")]["position"] == "0.600" and rows[("2", "BTCUSDT")]["position"] == "-0.600"
    audit = list(csv.DictReader(io.StringIO(cli("report", "audit", j, "--config", cfg))))
    children = [r for r in audit if r["account"] == "1"]
    assert children and all(r["client_order_id"] == "7" for r in children)
    cli("report", "tca", j, "--config", cfg)
    cli("risk", "metrics", j, "--config", cfg)
