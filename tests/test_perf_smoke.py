"""The benchmarks run end to end at a tiny size (no timing is asserted: figures go to perf/RESULTS.md)."""
import json
import shutil
import subprocess

import numpy as np
import pytest

from perf import __main__ as bench, baseline, workload
from protocol.codes import EventKind
from protocol.wire import MsgType


def test_workload_when_generated_then_every_cancel_hits_a_live_order():
    cmds, ops = workload.generate(20_000, symbols=3, seed=7)
    e = workload.make_engine(3, max_orders=1 << 14)
    events = e.process(cmds)
    assert (events["kind"] == EventKind.REJECTED).sum() == 0
    assert (events["kind"] == EventKind.FILL).sum() > 0
    assert len(ops) == len(cmds)


def test_baseline_when_same_flow_then_same_resting_orders_as_core():
    cmds, ops = workload.generate(5_000, symbols=1, seed=3, prefill=500)
    e = workload.make_engine(1, max_orders=1 << 14)
    e.run(cmds)
    book = baseline.SortedDictBook()
    for op in ops:
        book.apply(op)
    core_live = {(o["account"], o["client_order_id"], o["leaves"]) for a in range(1, workload.ACCOUNTS + 1)
                 for o in e.open_orders(a)}
    base_live = {(k[0], k[1], entry[1]) for k, (_, _, entry) in book.orders.items()}
    assert core_live == base_live


@pytest.mark.parametrize("argv", [
    ["core", "--n", "3000", "--runs", "1", "--symbols", "1,4", "--prefill", "500", "--no-plot"],
    ["core", "--risk", "--n", "3000", "--runs", "1", "--symbols", "1", "--no-plot"],
    ["memory", "--resting", "20000"],
    ["scale", "--n", "3000", "--runs", "2", "--repeats", "1", "--scale-symbols", "20", "--deep", "3000"],
    ["journal", "--journal-n", "2000", "--commits", "20", "--batches", "1,64", "--offered", "3000", "--seconds", "0.3",
     "--server-cpu", "0"],
    ["recovery", "--n", "20000", "--tail", "2000", "--runs", "1", "--seconds", "0.3", "--max-orders", "4096",
     "--server-cpu", "0"],
    ["riskcycle", "--var-accounts", "300", "--var-symbols", "10", "--runs", "1"],
    ["varworker", "--runs", "1", "--orders", "50", "--server-cpu", "0"],
    ["shards", "--runs", "1", "--orders-per-session", "2000", "--window", "500", "--durability", "none,sync"],
])
def test_scenario_when_run_small_then_prints_and_writes_json(tmp_path, capsys, argv):
    assert bench.main(argv + ["--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    doc = json.loads(path.read_text())
    assert doc["scenario"] == argv[0] and doc["results"]
    assert "==" in capsys.readouterr().out


def test_varworker_when_compared_with_a_tree_then_both_servers_measured_with_their_counters(tmp_path):
    # --compare-tree: a second server from that checkout (here this one again), phases interleaved; what each
    # server did per order comes from /proc and /metrics: a closed-loop order is one journal commit of its own
    from engine.testing import ROOT
    argv = ["varworker", "--runs", "2", "--orders", "60", "--server-cpu", "0", "--compare-tree", str(ROOT),
            "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    (path,) = tmp_path.glob("*.json")
    r = json.loads(path.read_text())["results"]
    for tree in ("this", "compared"):
        for kind in ("without", "with"):
            assert len(r[tree][kind]["p50_per_phase_us"]) == 2
        c = r[tree]["without"]["per_order"]
        assert c["commits"] == c["batches"] == 1.0 and c["voluntary_switches"] > 0 and c["commit_us"] > 0
    assert [len(v) for v in r["this_minus_compared_p50_us"].values()] == [2, 2]


def test_roundtrip_when_run_small_then_every_order_acknowledged(tmp_path, capsys):
    argv = ["roundtrip", "--rate", "2000", "--seconds", "0.5", "--runs", "1", "--durability", "none,sync",
            "--scrape", "--no-plot", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    (path,) = tmp_path.glob("*.json")
    results = json.loads(path.read_text())["results"]
    for variant in ("echo", "none", "sync", "none+scrape"):
        (run,) = results[variant]["runs"]
        assert run["acked"] == run["orders"] == 1000       # and the reply stream was verified report by report
        assert run["latency_us"]["count"] == 900 and run["latency_us"]["max"] >= run["latency_us"]["99.99"]
    assert set(results["scrape_impact"]) == {"99", "99.9"}


def test_throughput_when_run_small_then_every_reply_verified(tmp_path):
    argv = ["throughput", "--orders-per-session", "3000", "--window", "400", "--pipelined", "2", "--runs", "1",
            "--durability", "none,sync", "--risk", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    (path,) = tmp_path.glob("*.json")
    results = json.loads(path.read_text())["results"]
    for variant in ("echo", "none", "sync", "none+risk"):     # risk on: every order still accepted (verified)
        (run,) = results[variant]["runs"]
        assert run["orders"] == 6000 and run["orders_per_s"] > 0


def test_roundtrip_verify_when_a_report_is_wrong_then_it_raises():
    from perf import roundtrip
    import numpy as np
    n = 300
    reps = np.zeros(n + n - roundtrip.CANCEL_LAG, dtype=roundtrip.REPORT)
    k = np.arange(n)
    at = k + np.maximum(0, k - roundtrip.CANCEL_LAG)
    reps["h"]["msg_type"][at] = MsgType.ACCEPTED
    reps["r"]["client_order_id"][at] = k + 5
    kc = k[k >= roundtrip.CANCEL_LAG]
    reps["h"]["msg_type"][at[kc] + 1] = MsgType.CANCELLED
    reps["r"]["client_order_id"][at[kc] + 1] = kc - roundtrip.CANCEL_LAG + 5
    roundtrip.verify_reports(reps.tobytes(), n, 5)
    reps["r"]["client_order_id"][at[250] + 1] += 1
    with pytest.raises(RuntimeError, match="order 250"):
        roundtrip.verify_reports(reps.tobytes(), n, 5)


def test_replay_when_run_small_then_state_reproduced(tmp_path):
    assert bench.main(["replay", "--n", "5000", "--runs", "1", "--max-orders", "4096", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    r = json.loads(path.read_text())["results"]
    assert r["replay"]["commands"] == 5000 and r["snapshot"]["bytes"] > 0


def test_roundtrip_when_several_runs_on_one_server_then_no_replayed_reports_counted(tmp_path):
    # a session logging on with next_seq=1 got the earlier run's reports replayed and counted them
    argv = ["roundtrip", "--rate", "2000", "--seconds", "0.5", "--runs", "2", "--durability", "none",
            "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    (path,) = tmp_path.glob("*.json")
    runs = json.loads(path.read_text())["results"]["none"]["runs"]
    assert [r["acked"] for r in runs] == [1000, 1000] and all(r["latency_us"]["min"] > 0 for r in runs)


@pytest.mark.parametrize("argv,key", [
    (["sessions", "--sessions", "3", "--rate", "1000", "--seconds", "0.5", "--runs", "1"], "3_sessions"),
    (["symbols", "--symbol-counts", "20", "--rate", "1000", "--seconds", "0.5", "--runs", "1"], "20_symbols"),
])
def test_sessions_and_symbols_when_run_small_then_every_order_acknowledged(tmp_path, capsys, argv, key):
    assert bench.main(argv + ["--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    (run,) = json.loads(path.read_text())["results"][key]["runs"]
    assert run["acked"] == run["orders"] == 500 and run["latency_us"]["min"] > 0
    assert "==" in capsys.readouterr().out


def test_tls_when_run_small_then_handshakes_and_round_trips_measured(tmp_path):
    import shutil
    if shutil.which("openssl") is None:
        pytest.skip("perf tls needs the openssl command line tool")
    assert bench.main(["tls", "--handshakes", "5", "--orders", "50", "--runs", "1", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    r = json.loads(path.read_text())["results"]
    assert set(r["handshake"]) == {"ecdsa-p256", "rsa-2048"} and r["round_trip"]["tls"]["50"] > 0


def test_admin_when_run_small_then_actions_and_queries_measured(tmp_path):
    assert bench.main(["admin", "--actions", "3", "--orders", "20", "--runs", "1", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("admin-*.json")
    r = json.loads(path.read_text())["results"]
    assert all(r[k]["50"] > 0 for k in ("deposit", "deposit_production", "portfolio", "positions", "connect"))


def test_instructions_when_counted_twice_then_the_same_and_risk_costs_some(tmp_path):
    # callgrind's count is the point of the scenario: the same build and commands give the same figure
    # but for a few instructions of address-dependent copying (memcpy paths vary with the layout)
    counts = []
    for i in range(2):
        argv = ["instructions", "--count-n", "2000", "--symbols", "1", "--out", str(tmp_path / str(i))]
        assert bench.main(argv) == 0
        (path,) = (tmp_path / str(i)).glob("*.json")
        counts.append(json.loads(path.read_text())["results"]["1_symbols"])
    for k in ("risk_off", "risk_on"):
        assert abs(counts[0][k] - counts[1][k]) <= 1e-3 * counts[0][k], (k, counts)
    r = counts[0]
    assert r["commands"] == 2000 and 0 < r["risk_off"] < r["risk_on"] and 0 < r["off_over_on"] < 1


def test_workload_when_deep_book_then_the_flow_never_touches_it():
    prefill = 2_000
    cmds, ops = workload.generate(100_000, symbols=1, seed=1, prefill=prefill)
    flow, _ = workload.generate(100_000, symbols=1, seed=1)
    for field in ("kind", "account", "symbol", "side", "tif", "price", "qty"):     # the same flow after it
        assert (cmds[prefill:][field] == flow[field]).all(), field
    assert len(ops) == len(cmds)
    deep, alone = workload.make_engine(1), workload.make_engine(1)
    assert (deep.process(cmds)["kind"] == EventKind.REJECTED).sum() == 0     # (no client order id reused)
    alone.run(flow)
    assert deep.live_orders - alone.live_orders == prefill


@pytest.mark.skipif(shutil.which("callgrind_annotate") is None, reason="needs valgrind's callgrind_annotate")
def test_instructions_when_counted_then_what_engine_run_calls_is_counted_too(tmp_path):
    """callgrind toggles collection on entering and leaving each function its pattern matches: a
    pattern also matching Engine.run_triggers (called inside run) switched collection off there."""
    from perf import instructions
    cmds, _ = workload.generate(2000, symbols=1, seed=1)
    np.save(tmp_path / "cmds.npy", cmds)
    total = instructions.count(tmp_path / "cmds.npy", 1, "off", tmp_path)
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", str(tmp_path / "callgrind.1.off")],
                         capture_output=True, text=True, check=True).stdout
    own = [int(line.split()[0].replace(",", "")) for line in out.splitlines()
           if line.rstrip().split(" ")[-1].startswith("[") and "Engine_run_triggers" in line]
    assert own and 0 < own[0] < total


def test_roundtrip_when_run_from_an_installed_package_then_needs_no_tests_folder(tmp_path):
    """Only the packages on the path (as pip installs them: no tests/), run from elsewhere."""
    import importlib.util
    import os
    import subprocess
    import sys
    site = tmp_path / "site"
    site.mkdir()
    for pkg in ("engine", "protocol", "clients", "perf"):
        (site / pkg).symlink_to(importlib.util.find_spec(pkg).submodule_search_locations[0])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    r = subprocess.run([sys.executable, "-m", "perf", "roundtrip", "--rate", "1000", "--seconds", "0.3", "--runs", "1",
                        "--durability", "none", "--no-echo", "--no-plot", "--out", str(tmp_path / "out")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "== roundtrip ==" in r.stdout


def test_noisy_when_run_small_then_every_probe_acknowledged_in_every_variant(tmp_path, capsys):
    argv = ["noisy", "--runs", "1", "--seconds", "1", "--probe-rate", "100", "--noisy-rate", "200", "--no-plot",
            "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    (path,) = tmp_path.glob("noisy-*.json")
    r = json.loads(path.read_text())["results"]
    for variant in ("quiet", "orders", "heartbeat", "status"):
        (run,) = r["this"][variant]["runs"]
        assert run["unacknowledged_after_30s"] == 0 and run["latency_us"]["count"] == 50
    assert "x_quiet" in r["this"]["status"]
