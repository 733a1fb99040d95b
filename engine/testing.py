"""A real server as a subprocess on a loopback ephemeral port, with its journal in a temp dir:
the harness of the tests (tests/server_proc.py re-exports it) and of perf/'s server scenarios,
so `python -m perf roundtrip` works from an installed package too."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from protocol.wire import MsgType

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The workplace's shared folder (LOBSTER data, lossyfs): $TE_SHARED, else beside the
    checkout (../shared), else /work/shared (where a clone elsewhere still finds it)."""
    import os
    for candidate in (os.environ.get("TE_SHARED"), ROOT.parent / "shared", "/work/shared"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return ROOT.parent / "shared"

# The test symbols, one table for the servers and the router in front of them ({symbol_extra}: the first
# symbol's extra keys).
SYMBOLS = """
[[symbols]]
id = 1
name = "BTCUSDT"
price_decimals = 2
qty_decimals = 3
tick_size = 1
lot_size = 1
{symbol_extra}

[[symbols]]
id = 2
name = "AAPL"
price_decimals = 4
qty_decimals = 0
tick_size = 100
lot_size = 1
"""

BASE_CONFIG = """
[server]
host = "127.0.0.1"
port = 0
port_file = "{dir}/port"
ops_port = 0
ops_port_file = "{dir}/ops_port"
admin_port = 0
admin_port_file = "{dir}/admin_port"
heartbeat_ms = {heartbeat_ms}
output_buffer_bytes = {output_buffer_bytes}
lockout_failures = 3
auth_failure_delay_s = 0.05
logon_timeout_s = 2.0
{server_extra}

[engine]
max_orders = {max_orders}
max_accounts = {max_accounts}
max_symbols = {max_symbols}
max_levels = {max_levels}

[journal]
path = "{dir}/journal"
durability = "{durability}"
allow_none = true
{journal_extra}

[risk]
{risk}
""" + SYMBOLS

SECRETS = {1: "secret-one-for-tests", 2: "secret-two-for-tests", 3: "secret-three-for-tests",
           4: "secret-four-for-tests"}       # at least config.MIN_SECRET bytes
ENGINE = dict(max_orders=65536, max_accounts=16, max_symbols=8, max_levels=1024)

# The per-account sequenced execution reports a crash or failover check keeps (protocol/SPEC.md).
REPORT_TYPES = frozenset(int(t) for t in (MsgType.ACCEPTED, MsgType.REJECTED, MsgType.FILL, MsgType.CANCELLED,
                                           MsgType.REPLACED, MsgType.TRIGGERED, MsgType.RESTATED,
                                           MsgType.MASS_CANCEL_DONE))


def split_reports(buf: bytearray, into: dict) -> None:
    """Move every complete frame out of buf; keep sequenced reports as {seq: frame bytes}."""
    pos = 0
    while len(buf) - pos >= 8:
        n = int.from_bytes(buf[pos:pos + 2], "little")
        if len(buf) - pos < n:
            break
        if buf[pos + 2] in REPORT_TYPES:
            seq = int.from_bytes(buf[pos + 8:pos + 16], "little")
            if seq:
                into[seq] = bytes(buf[pos:pos + n])
        pos += n
    del buf[:pos]


def read_reports(sock, buf: bytearray, into: dict, seconds: float = 0.005) -> bool:
    """Read what a load client's socket (with a short timeout) brings within `seconds`, keeping the
    sequenced reports in `into` (split_reports); False once the server closed the connection."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 16)
        except socket.timeout:
            break
        if not data:
            return False
        buf += data
        split_reports(buf, into)
    return True


class ServerProc:
    def __init__(self, tmp: Path, durability="sync", heartbeat_ms=1000, output_buffer_bytes=4 << 20, extra="",
                 server_extra="", journal_extra="", admins=None, engine=None, risk="enabled = false",
                 account_extra="", symbol_extra=""):
        admins = admins or {}
        self.dir = Path(tmp)
        self.dir.mkdir(parents=True, exist_ok=True)
        text = BASE_CONFIG.format(dir=self.dir, durability=durability, heartbeat_ms=heartbeat_ms,
                                  output_buffer_bytes=output_buffer_bytes, server_extra=server_extra,
                                  journal_extra=journal_extra, risk=risk, symbol_extra=symbol_extra,
                                  **dict(ENGINE, **(engine or {}))) + extra
        self.admin = admins
        for i, (name, hashed) in enumerate(admins.items(), 1):
            text += f'\n[[admins]]\nid = {i}\nname = "{name}"\npassword_scrypt = "{hashed}"\n'
        for acct, secret in SECRETS.items():
            text += f'\n[[accounts]]\nid = {acct}\nname = "acct{acct}"\nsecret_env = "TE_TEST_SECRET_{acct}"\n'
            text += account_extra
            if acct >= 3:
                text += "stp_group = 5\n"
        self.config = self.dir / "config.toml"
        self.config.write_text(text)
        self.proc = None
        self.port = None

    def start(self, timeout=20.0, env_extra=None, wait_listening=True, args=()):
        """Start and wait until it listens (after recovery); wait_listening=False: only until its
        ops port (health probes) is known, which is before recovery. args: more `serve` options
        (e.g. --standby)."""
        for name in ("port", "ops_port", "admin_port"):     # a restart must not read the last run's ports
            (self.dir / name).unlink(missing_ok=True)
        env = dict(os.environ, **{f"TE_TEST_SECRET_{a}": s for a, s in SECRETS.items()}, **(env_extra or {}))
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.server", "--config", str(self.config), *args],
                                     cwd=self.dir, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        port_file = self.dir / ("port" if wait_listening else "ops_port")
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.output()}")
            if time.monotonic() > deadline:
                self.stop()                          # never leave it running behind a failed start
                raise RuntimeError(f"server did not start: {self.output()}")
            time.sleep(0.02 if wait_listening else 0.002)
        self.ops_port = int((self.dir / "ops_port").read_text())
        if not wait_listening:
            return self
        self.port = int(port_file.read_text())
        admin = self.dir / "admin_port"
        deadline = time.monotonic() + timeout
        while self.admin and not admin.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.admin_port = int(admin.read_text()) if self.admin else None
        return self

    def output(self):
        return (self.dir / "server.log").read_text(errors="replace")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout=15):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()


ROUTER_CONFIG = """
[server]
host = "127.0.0.1"
port = 0
port_file = "{dir}/port"
heartbeat_ms = {heartbeat_ms}
logon_timeout_s = 2.0
{server_extra}

[journal]
path = "{dir}/journal"
durability = "{durability}"

[router]
ops_port = 0
ops_port_file = "{dir}/ops_port"
reconnect_s = 0.2
{router_extra}
""" + SYMBOLS


class RouterProc(ServerProc):
    """`trading-engine route` as a subprocess in front of venues (ServerProc instances, or
    (name, port file) pairs), trading at each as `venue_account`; clients log on with the
    harness's accounts and SECRETS. fees: venue name -> (taker, maker) fractions as strings.
    Its log is server.log in its directory (output(), kill9(), stop() are ServerProc's)."""

    def __init__(self, tmp: Path, venues, fees=None, durability="sync", heartbeat_ms=1000, router_extra="",
                 venue_account=1, extra="", server_extra=""):
        self.dir = Path(tmp)
        self.dir.mkdir(parents=True, exist_ok=True)
        text = ROUTER_CONFIG.format(dir=self.dir, durability=durability, heartbeat_ms=heartbeat_ms,
                                    router_extra=router_extra, server_extra=server_extra,
                                    symbol_extra="") + extra
        fees = fees or {}
        for name, srv in venues:
            taker, maker = fees.get(name, ("0", "0"))
            port_file = srv if isinstance(srv, (str, Path)) else srv.dir / "port"
            text += (f'\n[[venues]]\nname = "{name}"\nport_file = "{port_file}"\naccount = {venue_account}\n'
                     f'secret_env = "TE_TEST_SECRET_{venue_account}"\ntaker_fee = "{taker}"\nmaker_fee = "{maker}"\n')
        for acct in SECRETS:
            text += f'\n[[accounts]]\nid = {acct}\nname = "acct{acct}"\nsecret_env = "TE_TEST_SECRET_{acct}"\n'
        self.config = self.dir / "router.toml"
        self.config.write_text(text)
        self.proc = None
        self.port = None

    def start(self, timeout=30.0):
        for name in ("port", "ops_port"):
            (self.dir / name).unlink(missing_ok=True)
        env = dict(os.environ, **{f"TE_TEST_SECRET_{a}": s for a, s in SECRETS.items()})
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.routing.server", "--config", str(self.config)],
                                     cwd=self.dir, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while not (self.dir / "port").exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited {self.proc.returncode}: {self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"router did not start: {self.output()}")
            time.sleep(0.02)
        self.port = int((self.dir / "port").read_text())
        self.ops_port = int((self.dir / "ops_port").read_text())
        return self

    def status(self) -> dict:
        import json
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ops_port}/status", timeout=5) as f:
            return json.loads(f.read())

    def metrics(self) -> str:
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ops_port}/metrics", timeout=5) as f:
            return f.read().decode()
