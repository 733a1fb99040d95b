"""`trading-engine` as a user runs it: one subprocess per command against a real server.
Every expected failure is one line on stderr and an exit code, never a traceback."""
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from clients import Client
from tests.server_proc import ROOT, SECRETS
from tests.test_tls import cert, tls_server          # noqa: F401 (cert is a fixture)


def cli(*args, port=None, env_extra=None, timeout=60, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRADING_ENGINE_SECRET=SECRETS[1])
    for name in ("TRADING_ENGINE_ACCOUNT", "TRADING_ENGINE_PORT", "TRADING_ENGINE_HOST"):
        env.pop(name, None)
    env.update(env_extra or {})
    if port is not None:
        env["TRADING_ENGINE_PORT"] = str(port)
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


def one_line_error(r, code):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines()     # the server's JSON log records aside
             if x.strip() and not x.startswith("usage:") and not x.startswith('{"ts"')]
    assert len(lines) == 1 and lines[0].startswith("trading-engine: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_options_when_after_the_command_then_used(server):
    r = cli("order", "sell", "BTCUSDT", "1", "--price", "45000.00", "--port", str(server.port), "--account", "2",
            env_extra={"TRADING_ENGINE_SECRET": SECRETS[2]})
    assert r.returncode == 0, r.stderr
    r = cli("orders", "--account", "2", "--port", str(server.port), "--json",
            env_extra={"TRADING_ENGINE_SECRET": SECRETS[2]})
    assert r.returncode == 0, r.stderr
    (order,) = json.loads(r.stdout)
    assert (order["symbol"], order["price"], order["stop_price"]) == ("BTCUSDT", "45000.00", None)
    r = cli("orders", "--port", str(server.port), "--json", env_extra={"TRADING_ENGINE_ACCOUNT": "1"})
    assert json.loads(r.stdout) == []                              # account 1 from the environment
    r = cli("book", "BTCUSDT", "--account", "2", "--json", port=server.port,
            env_extra={"TRADING_ENGINE_SECRET": SECRETS[2]})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["asks"] == [{"price": "45000.00", "qty": "1.000", "orders": 1}]


def test_order_when_it_trades_at_once_then_its_fills_are_shown(server):
    assert cli("order", "sell", "BTCUSDT", "1", "--price", "45000.00", port=server.port).returncode == 0
    assert cli("order", "sell", "BTCUSDT", "1", "--price", "45001.00", port=server.port).returncode == 0
    r = cli("order", "buy", "BTCUSDT", "1.5", "--price", "45001.00", "--account", "2", port=server.port,
            env_extra={"TRADING_ENGINE_SECRET": SECRETS[2]})
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[2:]]
    assert [(x[0], x[5], x[6], x[7]) for x in rows] == [("accepted", "45001.00", "1.500", "1.500"),
                                                        ("fill", "45000.00", "1.000", "0.500"),
                                                        ("fill", "45001.00", "0.500", "0.000")]
    r = cli("order", "buy", "BTCUSDT", "0.25", "--type", "market", "--json", port=server.port,
            env_extra={"TRADING_ENGINE_ACCOUNT": "2", "TRADING_ENGINE_SECRET": SECRETS[2]})
    reports = json.loads(r.stdout)
    assert [(x["kind"], x["qty"], x["price"]) for x in reports] == [("accepted", "0.250", "0.00"),
                                                                    ("fill", "0.250", "45001.00")]
    r = cli("order", "buy", "BTCUSDT", "0.5", "--type", "market", port=server.port)   # its own ask: STP
    assert [line.split()[0] for line in r.stdout.splitlines()[2:]] == ["accepted", "cancelled"]


def test_version_and_unknown_command_when_asked_then_answered(tmp_path):
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("trading-engine ")
    assert "did you mean 'book'" in one_line_error(cli("bok", "BTCUSDT"), 2)
    assert "unknown command 'frobnicate'" in one_line_error(cli("frobnicate"), 2)
    r = cli("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("serve", "journal", "admin", "order", "watch"))
    r = cli("journal", "stats", "-h")                   # the journal tool's own parser, inside the tree
    assert r.returncode == 0 and "path" in r.stdout
    r = cli("admin", "set_limit", "-h")
    assert r.returncode == 0 and "--clear" in r.stdout


def test_trading_commands_when_they_cannot_run_then_one_line_and_exit_code(server, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed_port = s.getsockname()[1]
    s.close()
    assert "cannot connect" in one_line_error(cli("book", "BTCUSDT", port=closed_port), 1)
    assert "AUTH_FAILED" in one_line_error(cli("book", "BTCUSDT", port=server.port,
                                               env_extra={"TRADING_ENGINE_SECRET": "wrong"}), 1)
    assert "TRADING_ENGINE_SECRET" in one_line_error(cli("book", "BTCUSDT", port=server.port,
                                                         env_extra={"TRADING_ENGINE_SECRET": ""}), 2)
    assert "nope" in one_line_error(cli("book", "BTCUSDT", "--secret-file", str(tmp_path / "nope"),
                                        port=server.port), 2)
    assert "unknown symbol" in one_line_error(cli("book", "NOPE", port=server.port), 1)
    assert "type='market'" in one_line_error(cli("order", "buy", "BTCUSDT", "1", port=server.port), 1)
    r = cli("admin", "status", "--port", str(closed_port), env_extra={"TRADING_ENGINE_ADMIN_PASSWORD": "x"})
    one_line_error(r, 1)


def test_output_when_pipe_closed_then_quiet_exit(server):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRADING_ENGINE_SECRET=SECRETS[1], TRADING_ENGINE_PORT=str(server.port))
    p = subprocess.Popen([sys.executable, "-m", "engine.cli", "symbols"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                                  # `| head` that has already gone
    err = p.stderr.read().decode()
    assert p.wait(60) == 0 and err == "", err


def test_watch_when_interrupted_then_exit_130_quietly(server):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRADING_ENGINE_SECRET=SECRETS[1], TRADING_ENGINE_PORT=str(server.port))
    p = subprocess.Popen([sys.executable, "-m", "engine.cli", "watch", "AAPL"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "AAPL" in p.stdout.readline()              # subscribed: the current top of book came
    p.send_signal(signal.SIGINT)
    assert p.wait(60) == 130
    assert p.stderr.read().strip() == "trading-engine: interrupted"


def test_serve_when_config_port_or_journal_bad_then_one_line(server, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(server.config.read_text() + "\n[nonsense]\nx = 1\n")
    assert "nonsense" in one_line_error(cli("serve", "--config", str(bad)), 2)
    secrets = {f"TE_TEST_SECRET_{a}": s for a, s in SECRETS.items()}
    taken = tmp_path / "taken.toml"                   # the trading port is the running server's
    taken.write_text(server.config.read_text().replace("port = 0\nport_file", f"port = {server.port}\nport_file", 1)
                     .replace(str(server.dir / "journal"), str(tmp_path / "journal2")))
    assert "address already in use" in one_line_error(cli("serve", "--config", str(taken), env_extra=secrets), 1)
    unwritable = tmp_path / "unwritable.toml"         # a journal under a file: cannot be created, even by root
    unwritable.write_text(server.config.read_text().replace(str(server.dir / "journal"),
                                                            str(server.config / "journal")))
    assert "cannot serve" in one_line_error(cli("serve", "--config", str(unwritable), env_extra=secrets), 1)


def test_serve_when_interrupted_during_recovery_then_clean_stop(server_factory, tmp_path):
    srv = server_factory()
    srv.start()

    async def fill():                                 # a journal that takes a moment to recover
        async with Client.connect("127.0.0.1", srv.port, account=1, secret=SECRETS[1]) as c:
            for base in range(0, 4000, 500):
                await asyncio.gather(*[c.place("AAPL", "sell", 1, price=f"{100 + (base + i) % 50}.00")
                                       for i in range(500)])
    asyncio.run(fill())
    assert srv.terminate() == 0
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(30)
    srv.start(env_extra={"NOTIFY_SOCKET": sock_path}, wait_listening=False)
    while b"STATUS=recovering" not in sock.recv(4096):
        pass
    srv.proc.send_signal(signal.SIGINT)               # during recovery
    assert srv.proc.wait(60) == 0
    time.sleep(0.1)
    assert "Traceback" not in srv.output() and "KeyboardInterrupt" not in srv.output()
    sock.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line tool for a certificate")
def test_tls_when_cafile_given_then_connects_else_one_line(server_factory, cert):
    srv = tls_server(server_factory, cert)
    r = cli("book", "BTCUSDT", "--cafile", str(cert[0]), "--json", port=srv.port)
    assert r.returncode == 0 and json.loads(r.stdout)["symbol"] == "BTCUSDT", r.stderr
    assert "certificate verify failed" in one_line_error(cli("book", "BTCUSDT", "--tls", port=srv.port), 1)
    one_line_error(cli("book", "BTCUSDT", port=srv.port), 1)          # plain TCP to a TLS port
