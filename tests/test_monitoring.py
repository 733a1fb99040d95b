"""The shipped monitoring (systemd/monitoring/): Prometheus accepts the scrape config and the alert
rules and the rules' own unit tests pass (promtool; skipped where it is not installed), and every
metric the rules and the Grafana dashboard name exists in a live server's /metrics."""
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from protocol.codes import Side
from protocol.wire import MsgType
from tests.server_proc import ROOT
from tests.test_ops import OPS_TOKEN, families, get, trade_once
from tests.test_server_session import Raw

MON = ROOT / "systemd" / "monitoring"
METRIC = re.compile(r"\b((?:te|process)_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b((?:te|process)_[a-z0-9_]+)\{([^}]*)\}")

promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                              reason="promtool not installed (Debian: apt-get install prometheus)")


def rule_exprs():
    text = (MON / "alerts.yml").read_text()
    return [m.group(1) for m in re.finditer(r"^\s+expr: (.+)$", text, re.M)]


def dashboard_exprs():
    dash = json.loads((MON / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


@promtool
def test_monitoring_when_checked_by_promtool_then_rules_config_and_rule_tests_pass(tmp_path):
    for f in ("alerts.yml", "alerts_test.yml", "prometheus.yml"):
        shutil.copy(MON / f, tmp_path / f)
    token = tmp_path / "ops-token"
    token.write_text(OPS_TOKEN)
    config = tmp_path / "prometheus.yml"
    config.write_text(config.read_text().replace("/etc/trading-engine/ops-token", str(token)))
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"],
                 ["check", "config", "prometheus.yml"]):
        r = subprocess.run(["promtool", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (args, r.stdout, r.stderr)


def test_monitoring_when_a_server_is_scraped_then_every_metric_of_rules_and_dashboard_exists(server_factory):
    from tests.test_risk_server import HASH, RISK, Admin
    srv = server_factory(risk=RISK, admins={"ops": HASH}, server_extra='ops_token_env = "TE_TEST_OPS_TOKEN"',
                         account_extra='initial_deposit = "1000"\n').start(env_extra={"TE_TEST_OPS_TOKEN": OPS_TOKEN})
    trade_once(srv)
    Admin(srv).ok("snapshot")                               # te_snapshot_age_seconds: after the first snapshot
    deadline = time.monotonic() + 20                        # ... is written: the forked writer is reaped
    while "te_snapshot_age_seconds" not in (samples := families(get(srv, "/metrics", OPS_TOKEN)[1])) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    names = set(samples) | {n.rsplit("_", 1)[0] for n in samples if n.endswith(("_bucket", "_count", "_sum"))}
    exprs = rule_exprs() + dashboard_exprs()
    assert len(rule_exprs()) >= 10 and len(dashboard_exprs()) >= 20
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used and used <= names, sorted(used - names)
    for e in exprs:                                         # label matchers name labels and values that exist
        for name, matchers in SELECTOR.findall(e):
            for label, value in re.findall(r'(\w+)="([^"]*)"', matchers):
                assert any(dict(k).get(label) == value for k in samples[name]), (e, label, value)


def test_metrics_when_a_session_stops_reading_then_slow_consumer_counted_and_logged(server_factory):
    srv = server_factory(output_buffer_bytes=128 << 10, server_extra="socket_send_buffer_bytes = 4096").start()
    before = families(get(srv, "/metrics")[1])["te_rejects_total"][(("reason", "SLOW_CONSUMER"),)]
    slow = Raw(srv.port, rcvbuf=2048)
    slow.logon(1)
    for i in range(1, 3001):                                 # 3,000 reports it never reads
        try:
            slow.order(i, Side.SELL, 1, 1_000 + i)
        except OSError:
            break                                           # already cut off
    watcher = Raw(srv.port)
    watcher.logon(2)
    watcher.order(1, Side.BUY, 1, 1)
    watcher.until(MsgType.ACCEPTED)                         # the server has read past the slow session's orders
    after = families(get(srv, "/metrics")[1])["te_rejects_total"][(("reason", "SLOW_CONSUMER"),)]
    assert (before, after) == (0, 1)
    logs = [json.loads(line) for line in srv.output().splitlines() if line.strip()]
    (cut,) = [x for x in logs if x["event"] == "slow_consumer"]
    assert cut["account"] == "acct1" and cut["peer"] == "127.0.0.1" and cut["session"] >= 1
