"""Operations: a real HTTP client scrapes /metrics and the health probes of a running server;
sd_notify READY/WATCHDOG/STOPPING reach a datagram socket made by the test."""
import json
import socket
import time
import urllib.error
import urllib.request

from protocol.codes import Side
from protocol.wire import MsgType
from tests.test_server_session import Raw


def get(srv, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.ops_port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def test_metrics_when_trading_then_counters_move(server):
    status, before = get(server, "/metrics")
    assert status == 200 and "process_resident_memory_bytes" in before
    a, b = Raw(server.port), Raw(server.port)
    a.logon(1)
    b.logon(2)
    a.order(1, Side.SELL, 5, 100)
    a.until(MsgType.ACCEPTED)
    b.order(1, Side.BUY, 2, 100)
    b.until(MsgType.FILL)
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
