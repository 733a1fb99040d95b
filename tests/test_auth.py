"""Authentication (engine/auth.py): lockouts a stranger cannot turn against an account's owner,
bounded failure bookkeeping, refused logons logged, logon replay refused across restarts, secret
length, and the admin listener's password checks. A real server subprocess; other loopback
addresses (127.0.0.x) stand for other peers."""
import json
import os
import socket
import threading
import time

import pytest

from engine.admin import hash_password
from protocol import wire
from protocol.codes import Reject, Side
from protocol.wire import MsgType
from tests.server_proc import SECRETS
from tests.test_ops import get
from tests.test_server_session import Raw

PASSWORD = "correct horse"
HASH = hash_password(PASSWORD, n=1 << 10)      # a cheap cost factor for the test only


def raw_from(port, addr):
    """A Raw client connected from source address `addr`."""
    c = Raw.__new__(Raw)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(addr, 0))
    c.buf = b""
    return c


def logon_from(srv, addr, account, secret=None, **kw):
    """(message type, reason or None) of one logon from `addr`."""
    c = raw_from(srv.port, addr)
    try:
        c.send(c.logon_frame(account, secret if secret is not None else SECRETS[account], **kw))
        t, body, _ = c.next()
        return t, int(body["reason"]) if t == MsgType.LOGON_REJECTED else None
    finally:
        c.close()


def value(text, series):
    """The value of one exact series (name with labels) in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(series)


def scrape(srv, series):
    return value(get(srv, "/metrics")[1], series)


def log_messages(srv):
    return [json.loads(line).get("msg", "") for line in srv.output().splitlines() if line.startswith("{")]


ACCEPTED = (MsgType.LOGON_ACCEPTED, None)
FAILED = (MsgType.LOGON_REJECTED, Reject.AUTH_FAILED)
LOCKED = (MsgType.LOGON_REJECTED, Reject.LOCKED_OUT)


# -- 18.8: lockouts per (account, address); the whole account only far later --
def test_logon_when_a_stranger_guesses_then_that_pair_locked_and_the_owner_elsewhere_logs_on(server):
    for _ in range(3):                                          # test config: lockout_failures = 3
        assert logon_from(server, "127.0.0.2", 1, "a-wrong-guess-0123") == FAILED
    assert logon_from(server, "127.0.0.2", 1) == LOCKED         # that pair, even with the right secret
    assert logon_from(server, "127.0.0.1", 1) == ACCEPTED       # the owner, elsewhere: not locked out
    assert logon_from(server, "127.0.0.2", 2) == ACCEPTED       # nor that address for another account
    msgs = log_messages(server)                                 # every refusal logged: reason, account, peer
    assert msgs.count("logon refused: AUTH_FAILED account=1 peer=127.0.0.2") == 3
    assert "logon refused: LOCKED_OUT account=1 peer=127.0.0.2" in msgs
    records = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    refused = [(r["reason"], r["account"], r["peer"]) for r in records if r.get("event") == "logon_refused"]
    assert refused.count(("AUTH_FAILED", 1, "127.0.0.2")) == 3 and ("LOCKED_OUT", 1, "127.0.0.2") in refused


def test_logon_when_failures_from_many_addresses_reach_account_threshold_then_account_locked(server_factory):
    srv = server_factory(server_extra="account_lockout_failures = 6").start()
    for addr in ("127.0.0.2", "127.0.0.3"):
        for _ in range(3):
            assert logon_from(srv, addr, 1, "a-wrong-guess-0123") == FAILED
        assert logon_from(srv, "127.0.0.5", 2) == ACCEPTED
    assert logon_from(srv, "127.0.0.4", 1) == LOCKED            # 6 in all: now the whole account
    assert logon_from(srv, "127.0.0.4", 2) == ACCEPTED          # only that account


def test_refused_logons_when_many_then_logged_at_the_configured_rate_and_all_counted(server_factory):
    srv = server_factory(server_extra="refused_logon_logs_per_s = 1.0").start()
    stale = time.time_ns() - 120 * 10**9
    for i in range(30):
        assert logon_from(srv, "127.0.0.1", 1, ts=stale + i) == (MsgType.LOGON_REJECTED, Reject.STALE_TIMESTAMP)
    assert scrape(srv, 'te_logons_refused_total{reason="STALE_TIMESTAMP"}') == 30
    lines = [m for m in log_messages(srv) if m.startswith("logon refused: STALE_TIMESTAMP account=1")]
    assert 1 <= len(lines) < 30


# -- 18.9: failure bookkeeping bounded, and expiring --
def test_failures_when_many_distinct_then_kept_at_the_bound_and_expire(server_factory):
    srv = server_factory(server_extra="auth_failure_entries = 40\naddress_lockout_failures = 100000\n"
                                      "lockout_s = 2.0").start()
    series = 'te_auth_failure_entries{listener="trading"}'
    assert scrape(srv, series) == 0
    results = []

    def guess(account, addr):
        results.append(logon_from(srv, addr, account, "a-wrong-guess-0123"))
    for wave in range(20):                       # 200 failures: unknown account ids, four addresses
        threads = [threading.Thread(target=guess, args=(1000 + wave * 10 + i, f"127.0.0.{2 + i % 4}"))
                   for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [FAILED] * 200
    assert scrape(srv, series) == 40             # (pair and address keys) at the bound, never above
    deadline = time.monotonic() + 20
    while scrape(srv, series) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert scrape(srv, series) == 0              # every record expires after lockout_s


# -- 18.10: a captured LOGON is refused after a restart too --
@pytest.mark.parametrize("restart", ["kill9", "sigterm"])
def test_logon_when_captured_frame_replayed_after_restart_then_refused(server_factory, restart):
    srv = server_factory(durability="sync").start()
    c = Raw(srv.port)
    frame = c.logon_frame(1, SECRETS[1])
    c.send(frame)
    assert c.next()[0] == MsgType.LOGON_ACCEPTED
    c.close()
    srv.kill9() if restart == "kill9" else srv.terminate()
    srv.start()
    c = Raw(srv.port)
    c.send(frame)                                # the same bytes, well inside the 30 s window
    t, body, _ = c.next()
    assert (t, int(body["reason"])) == (MsgType.LOGON_REJECTED, Reject.REPLAYED_LOGON)
    ts = int.from_bytes(frame[24:32], "little")       # LOGON.timestamp_ns
    assert logon_from(srv, "127.0.0.1", 1, ts=ts - 1) == (MsgType.LOGON_REJECTED, Reject.REPLAYED_LOGON)
    assert logon_from(srv, "127.0.0.1", 1) == ACCEPTED           # a later timestamp: accepted


def test_logon_when_orders_follow_in_the_same_write_then_handled_after_logon_accepted(server_factory):
    srv = server_factory(durability="sync").start()
    c = Raw(srv.port)
    order = wire.encode(MsgType.NEW_ORDER, client_order_id=1, symbol=1, side=Side.BUY, order_type=1, tif=1, stp=1,
                        price=100, qty=1)
    c.send(c.logon_frame(1, SECRETS[1]) + order)
    assert c.next()[0] == MsgType.LOGON_ACCEPTED
    t, body, _ = c.next()
    assert t == MsgType.ACCEPTED and int(body["client_order_id"]) == 1


# -- 18.11: secrets too short (or empty) stop start-up with one line --
@pytest.mark.parametrize("source", ["empty_file", "short_env"])
def test_start_when_secret_empty_or_short_then_one_line_error(server_factory, source):
    srv = server_factory()
    env = None
    if source == "empty_file":
        path = srv.dir / "secret1"
        path.write_text("\n")
        os.chmod(path, 0o600)
        srv.config.write_text(srv.config.read_text().replace('secret_env = "TE_TEST_SECRET_1"',
                                                             f'secret_file = "{path}"'))
    else:
        env = {"TE_TEST_SHORT_SECRET": "short-secret"}
        srv.config.write_text(srv.config.read_text().replace('secret_env = "TE_TEST_SECRET_2"',
                                                             'secret_env = "TE_TEST_SHORT_SECRET"'))
    with pytest.raises(RuntimeError):
        srv.start(env_extra=env)
    assert srv.proc.returncode == 2
    out = srv.output().strip()
    assert "Traceback" not in out and len(out.splitlines()) == 1
    assert "at least 16" in out and ("acct1" if source == "empty_file" else "acct2") in out


# -- 18.13: the admin listener's password checks --
def admin_from(srv, addr, user, password, action="status"):
    with socket.create_connection(("127.0.0.1", srv.admin_port), timeout=60, source_address=(addr, 0)) as s:
        s.sendall(json.dumps({"user": user, "password": password, "action": action}).encode() + b"\n")
        f = s.makefile("rb")
        return json.loads(f.readline())


CHECKS = "te_admin_password_checks_total"


def test_admin_when_unknown_name_or_wrong_password_then_exactly_one_check_each(server_factory):
    srv = server_factory(admins={"ops": HASH}).start()
    n = scrape(srv, CHECKS)
    assert admin_from(srv, "127.0.0.2", "nobody", PASSWORD) == {"ok": False, "error": "authentication failed"}
    assert scrape(srv, CHECKS) == n + 1
    assert admin_from(srv, "127.0.0.3", "ops", "wrong") == {"ok": False, "error": "authentication failed"}
    assert scrape(srv, CHECKS) == n + 2
    assert admin_from(srv, "127.0.0.4", "ops", PASSWORD)["ok"]
    assert scrape(srv, CHECKS) == n + 3


def test_admin_when_failures_repeat_from_an_address_then_locked_out_without_checks(server_factory):
    srv = server_factory(admins={"ops": HASH}).start()
    for _ in range(5):                                                  # admin_lockout_failures = 5
        assert not admin_from(srv, "127.0.0.2", "ops", "wrong")["ok"]
    assert not admin_from(srv, "127.0.0.2", "ops", PASSWORD)["ok"]      # that address: locked out
    n = scrape(srv, CHECKS)
    assert not admin_from(srv, "127.0.0.2", "nobody", PASSWORD)["ok"]
    assert not admin_from(srv, "127.0.0.2", "ops", PASSWORD)["ok"]
    assert scrape(srv, CHECKS) == n                                     # ... without a scrypt
    assert admin_from(srv, "127.0.0.3", "ops", PASSWORD)["ok"]          # the operator elsewhere: not locked


def test_admin_when_failures_for_an_operator_from_many_addresses_then_operator_locked_out(server_factory):
    srv = server_factory(admins={"ops": HASH}, server_extra="admin_operator_lockout_failures = 4").start()
    for addr in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
        assert not admin_from(srv, addr, "ops", "wrong")["ok"]
    assert not admin_from(srv, "127.0.0.6", "ops", PASSWORD)["ok"]      # 4 failures for "ops" in all
    assert admin_from(srv, "127.0.0.6", "other", PASSWORD) == {"ok": False, "error": "authentication failed"}
    assert scrape(srv, "te_admin_auth_refused_total") == 6


def test_admin_when_many_guess_at_once_then_one_password_check_at_a_time(server_factory):
    srv = server_factory(admins={"ops": hash_password(PASSWORD, n=1 << 14)}).start()
    n = scrape(srv, CHECKS)
    out = []
    threads = [threading.Thread(target=lambda a: out.append(admin_from(srv, a, "ops", "wrong")),
                                args=(f"127.0.0.{10 + i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [{"ok": False, "error": "authentication failed"}] * 8
    assert scrape(srv, CHECKS) == n + 8
    assert scrape(srv, "te_admin_password_checks_max_concurrent") == 1
