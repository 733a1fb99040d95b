"""The admin listener: its own port and credentials, journaled actions that record the operator."""
import json
import os
import subprocess
import sys

import numpy as np

from engine.admin import check_password, hash_password
from engine.journal import Journal
from protocol.codes import CommandKind, Side
from protocol.wire import MsgType
from tests.server_proc import ROOT
from tests.test_server_session import Raw

PASSWORD = "correct horse"
HASH = hash_password(PASSWORD, n=1 << 10)      # a cheap cost factor for the test only


def admin(srv, *args, password=PASSWORD):
    env = dict(os.environ, TRADING_ENGINE_ADMIN_PASSWORD=password, TRADING_ENGINE_ADMIN_USER="ops",
               TRADING_ENGINE_ADMIN_PORT=str(srv.admin_port), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "engine.cli", "admin", *args], env=env, capture_output=True,
                       text=True, timeout=60)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else None


def test_password_when_hashed_then_only_the_right_one_checks():
    assert check_password(PASSWORD, HASH) and not check_password("wrong", HASH)
    assert not check_password(PASSWORD, "md5$x")


def test_halt_when_admin_acts_then_orders_refused_and_journal_names_operator(server_factory):
    srv = server_factory(admins={"ops": HASH}).start()
    rc, resp = admin(srv, "halt", "BTCUSDT")
    assert rc == 0 and resp["ok"]
    a = Raw(srv.port)
    a.logon(1)
    a.order(1, Side.BUY, 1, 100)
    t, body, _ = a.until(MsgType.REJECTED)
    assert int(body["reason"]) == 1004                       # SYMBOL_HALTED
    rc, resp = admin(srv, "status")
    assert rc == 0 and resp["status"]["halted_symbols"] == ["BTCUSDT"]
    rc, _ = admin(srv, "resume", "BTCUSDT")
    a.order(2, Side.BUY, 1, 100)
    assert a.until(MsgType.ACCEPTED) is not None
    cmds = np.concatenate([c for c, _ in Journal(str(srv.dir / "journal"), readonly=True).batches()])
    halts = cmds[cmds["kind"] == CommandKind.HALT]
    assert len(halts) == 1 and int(halts[0]["operator"]) == 1 and int(halts[0]["account"]) == 0   # who did it


def test_admin_when_wrong_password_then_refused_and_trading_port_rejects_admin(server_factory):
    srv = server_factory(admins={"ops": HASH}).start()
    rc, resp = admin(srv, "halt", "BTCUSDT", password="nope")
    assert rc == 1 and resp == {"ok": False, "error": "authentication failed"}
    assert admin(srv, "status")[1]["status"]["halted_symbols"] == []
    c = Raw(srv.port)                                        # admin JSON on the trading port: not a frame
    c.send(b'{"user": "ops", "password": "correct horse", "action": "halt", "symbol": "BTCUSDT"}\n')
    f = c.next()
    assert f is None or f[0] == MsgType.PROTOCOL_ERROR


def test_admin_request_when_line_long_then_served_or_refused_with_an_error(server_factory):
    """A request line above asyncio's 64 KiB default (a risk worker's var_update rows) is served; one
    above MAX_REQUEST_BYTES gets an error line, not a reset connection."""
    import socket
    from engine.admin import MAX_REQUEST_BYTES
    srv = server_factory(admins={"ops": HASH}).start()

    def ask(line: bytes):
        with socket.create_connection(("127.0.0.1", srv.admin_port), timeout=30) as s:
            try:
                s.sendall(line)
            except (BrokenPipeError, ConnectionResetError):   # the server closed on the over-long line
                pass
            buf = b""
            while not buf.endswith(b"\n"):
                try:
                    chunk = s.recv(1 << 16)
                except ConnectionResetError:
                    return None
                if not chunk:
                    return None
                buf += chunk
            return json.loads(buf)

    req = json.dumps({"user": "ops", "password": PASSWORD, "action": "status"})
    resp = ask(req[:-1].encode() + b" " * 200_000 + b"}\n")
    assert resp is not None and resp["ok"] and resp["status"]["halted_symbols"] == []
    resp = ask(req[:-1].encode() + b" " * (MAX_REQUEST_BYTES + 10) + b"}\n")
    # the error line, unless the close reset the connection before the client read it
    assert resp in (None, {"ok": False, "error": f"request line above {MAX_REQUEST_BYTES} bytes"})
    assert ask(req.encode() + b"\n")["ok"]                  # and the listener goes on serving
