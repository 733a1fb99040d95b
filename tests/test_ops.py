"""Operations: a real HTTP client scrapes /metrics and the health probes of a running server;
sd_notify READY/WATCHDOG/STOPPING reach a datagram socket made by the test."""
import json
import socket
import time
import urllib.error
import urllib.request

from protocol import wire
from protocol.codes import OrderType, Reject, Side
from protocol.wire import MsgType
from tests.test_server_session import Raw


def get(srv, path, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{srv.ops_port}{path}",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def trade_once(server):
    """Account 1 rests 5 @ 100 on BTCUSDT, account 2 buys 2 of it: 2 accepted, 1 trade."""
    a, b = Raw(server.port), Raw(server.port)
    a.logon(1)
    b.logon(2)
    a.order(1, Side.SELL, 5, 100)
    a.until(MsgType.ACCEPTED)
    b.order(1, Side.BUY, 2, 100)
    b.until(MsgType.FILL)
    return a, b


def test_metrics_when_trading_then_counters_move(server):
    status, before = get(server, "/metrics")
    assert status == 200 and "process_resident_memory_bytes" in before
    a, b = trade_once(server)
    _, after = get(server, "/metrics")
    assert metric(after, "te_orders_accepted_total") == metric(before, "te_orders_accepted_total") + 2
    assert metric(after, "te_trades_total") == 1
    assert metric(after, "te_open_orders") == 1 and metric(after, "te_sessions") == 2
    assert metric(after, "te_journal_last_seq") >= 2 and metric(after, "te_bytes_in_total") > 0


def test_health_when_running_then_live_ready_and_detailed(server):
    assert get(server, "/health/live")[0] == 200
    status, body = get(server, "/health/ready")
    assert status == 200 and json.loads(body) == {"ready": True}
    status, body = get(server, "/health/detailed")
    d = json.loads(body)
    assert status == 200 and d["journal"]["durability"] == "sync" and d["journal"]["writable"] is True
    assert d["halted_symbols"] == [] and get(server, "/nope")[0] == 404


def test_notify_when_under_systemd_then_ready_after_recovery_watchdog_and_stopping(server_factory, tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(10)
    srv = server_factory().start(env_extra={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "200000"})
    messages = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(m == "WATCHDOG=1" for m in messages) < 3:
        messages.append(sock.recv(4096).decode())
    assert messages[0] == "STATUS=recovering"
    assert messages[1].startswith("READY=1")
    assert "recovered:" in srv.output()               # READY only after recovery finished
    assert sum(m == "WATCHDOG=1" for m in messages) >= 3
    assert srv.terminate() == 0
    rest = []
    while "STOPPING=1" not in rest:
        rest.append(sock.recv(4096).decode())


def families(text):
    """{sample name: {labels tuple: value}} through prometheus-client's own text parser."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_metrics_when_trading_then_hot_path_counters_and_histograms_move(server):
    before = families(get(server, "/metrics")[1])
    a, b = trade_once(server)
    b.order(2, Side.BUY, 1, 100, symbol=7)                         # unknown symbol: rejected by the engine
    assert b.until_any((MsgType.REJECTED,))[1]["reason"] == Reject.UNKNOWN_SYMBOL
    b.send(wire.encode(MsgType.CANCEL, client_order_id=99))         # unknown order
    b.until(MsgType.REJECTED)
    m = families(get(server, "/metrics")[1])
    orders = m["te_orders_total"]
    assert orders[(("outcome", "accepted"), ("type", "limit"))] == 2
    assert orders[(("outcome", "rejected"), ("type", "limit"))] == 1
    assert orders[(("outcome", "rejected"), ("type", "cancel"))] == 1
    assert orders[(("outcome", "accepted"), ("type", "market"))] == 0
    rejects = m["te_rejects_total"]
    assert rejects[(("reason", "UNKNOWN_SYMBOL"),)] == 1 and rejects[(("reason", "UNKNOWN_ORDER"),)] == 1
    assert m["te_fills_total"][(("symbol", "BTCUSDT"),)] == 1 and m["te_fills_total"][(("symbol", "AAPL"),)] == 0
    assert m["te_traded_qty_total"][(("symbol", "BTCUSDT"),)] == 0.002      # 2 units of 10^-3 (qty_decimals 3)
    assert m["te_bytes_out_total"][()] > before["te_bytes_out_total"][()]
    # every applied command was acknowledged after its commit: 4 latency samples, >= 1 batch and commit
    assert m["te_ack_latency_seconds_count"][()] == 4
    assert m["te_ack_latency_seconds_bucket"][(("le", "+Inf"),)] == 4
    assert m["te_ack_latency_seconds_sum"][()] > 0
    assert 1 <= m["te_batch_commands_count"][()] <= 4 and m["te_batch_commands_sum"][()] == 4
    assert m["te_journal_commit_seconds_count"][()] == m["te_batch_commands_count"][()]
    assert m["te_journal_bytes"][()] > 0 and m["te_journal_last_seq"][()] == 4
    # the buckets are cumulative and end at the count
    buckets = sorted((float(dict(k)["le"]), v) for k, v in m["te_journal_commit_seconds_bucket"].items())
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1][1] == m["te_journal_commit_seconds_count"][()]


OPS_TOKEN = "ops-token-for-the-tests-0123456789"


def listening_address(port):
    """The local address a TCP socket listening on `port` is bound to, from /proc/net/tcp."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":
            return socket.inet_ntoa(bytes.fromhex(addr)[::-1])
    raise KeyError(port)


def test_ops_when_trading_host_is_all_addresses_then_ops_listener_stays_on_loopback(server_factory):
    srv = server_factory()
    srv.config.write_text(srv.config.read_text().replace('host = "127.0.0.1"', 'host = "0.0.0.0"', 1))
    srv.start()
    assert listening_address(srv.port) == "0.0.0.0"           # trading: where the operator said
    assert listening_address(srv.ops_port) == "127.0.0.1"      # ops: loopback unless ops_host says otherwise
    assert get(srv, "/health/ready")[0] == 200


def test_ops_when_no_token_then_no_account_figures_and_with_token_then_per_account_series(server_factory):
    from tests.test_risk_server import HASH, RISK, Admin
    srv = server_factory(risk=RISK, admins={"ops": HASH}, server_extra='ops_token_env = "TE_TEST_OPS_TOKEN"',
                         account_extra='initial_deposit = "1000"\n').start(env_extra={"TE_TEST_OPS_TOKEN": OPS_TOKEN})
    Admin(srv).ok("kill", account="acct2", switch="on")
    for token in (None, "wrong-token-wrong-token-wrong"):
        _, text = get(srv, "/metrics", token)
        assert "account=" not in text and "acct" not in text
        m = families(text)
        assert m["te_accounts"][(("state", "active"),)] == 4 and m["te_accounts_kill_switch"][()] == 1
        _, body = get(srv, "/health/detailed", token)
        d = json.loads(body)
        assert "acct" not in body and d["risk"]["killed_accounts"] == 1
    # the operator's kill switch is a control command, not order entry; the build is labelled
    assert m["te_control_commands_total"][(("command", "kill_switch"), ("outcome", "accepted"))] == 1
    assert {dict(k)["type"] for k in m["te_orders_total"]} == \
        {t.name.lower() for t in OrderType} | {"cancel", "amend", "mass_cancel"}
    (build,) = m["te_build_info"]
    assert dict(build)["schema_version"] == str(wire.SCHEMA_VERSION) and dict(build)["version"]
    m = families(get(srv, "/metrics", OPS_TOKEN)[1])
    assert m["te_account_cash"][(("account", "acct1"),)] == 1000
    assert m["te_account_state"][(("account", "acct1"), ("te_account_state", "active"))] == 1
    assert m["te_account_state"][(("account", "acct1"), ("te_account_state", "liquidating"))] == 0
    assert m["te_account_kill_switch"][(("account", "acct2"),)] == 1
    assert json.loads(get(srv, "/health/detailed", OPS_TOKEN)[1])["risk"]["killed_accounts"] == ["acct2"]


def test_ops_when_token_not_configured_then_a_bearer_header_gets_no_account_figures(server_factory):
    from tests.test_risk_server import RISK
    srv = server_factory(risk=RISK).start()
    assert "account=" not in get(srv, "/metrics", OPS_TOKEN)[1]


def test_logs_when_serving_then_one_json_shape_with_structured_fields(server):
    a, b = trade_once(server)
    a.close()
    b.close()
    raw = Raw(server.port)
    raw.send(b"\xff" * 64)                                   # a protocol error: logged with its peer
    raw.until(MsgType.PROTOCOL_ERROR)
    assert server.terminate() == 0
    lines = [json.loads(line) for line in server.output().splitlines() if line.strip()]  # all of it JSON
    assert lines and all(list(x)[:5] == ["ts", "level", "logger", "event", "msg"] for x in lines)
    (logon,) = [x for x in lines if x["event"] == "logon" and x["account"] == "acct1"]
    assert logon["msg"] == "logon" and logon["peer"] == "127.0.0.1" and logon["session"] >= 1
    (err,) = [x for x in lines if x["event"] == "protocol_error"]
    assert err["peer"] == "127.0.0.1" and err["reason"] and "offset" in err
    assert [x["port"] for x in lines if x["event"] == "listening"] == [server.port]
