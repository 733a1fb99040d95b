"""The admin listener and `trading-engine admin ...`.

A separate TCP listener (loopback by default; the trading port accepts no admin
message at all) speaking JSON lines: one request object per line, one response
object per line. Every request carries the operator's name and password; the
password is checked against its scrypt hash in a worker thread (hashlib.scrypt
releases the GIL: about 0.5 s of work that must never run on the engine thread),
and failures are answered after a delay.

State-changing actions become core commands and are journaled like any other:
for an admin command, Command.account holds the operator's id from [[admins]],
so the journal records who did it. Actions:
  status                       engine and session counters
  halt / resume SYMBOL         symbol state (core HALT / RESUME)
  end_of_day [SYMBOL]          cancel DAY orders (core END_OF_DAY; all symbols if none)
  snapshot                     write a snapshot now
  log_level LEVEL              change the log level
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import hmac
import logging
import os
import sys

import msgspec

from protocol.codes import CommandKind

log = logging.getLogger("trading-engine")

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1


class Request(msgspec.Struct, forbid_unknown_fields=True):
    user: str
    password: str
    action: str
    symbol: str | None = None
    level: str | None = None


def hash_password(password: str, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P) -> str:
    salt = os.urandom(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=1 << 28, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${h.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, want = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=1 << 28, dklen=len(bytes.fromhex(want)))
        return hmac.compare_digest(got, bytes.fromhex(want))
    except (ValueError, TypeError):
        return False


class AdminListener:
    def __init__(self, server):
        self.server = server
        self.admins = {a.name: a for a in server.cfg.admins}
        self.symbols = {s.name: s.id for s in server.cfg.symbols}
        self.tcp = None

    async def start(self, host, port):
        self.tcp = await asyncio.start_server(self.handle, host, port)
        return self.tcp.sockets[0].getsockname()[1]

    def close(self):
        if self.tcp is not None:
            self.tcp.close()

    async def handle(self, reader, writer):
        loop = asyncio.get_running_loop()
        try:
            while line := await reader.readline():
                try:
                    req = msgspec.json.decode(line, type=Request)
                except msgspec.DecodeError as e:
                    writer.write(msgspec.json.encode({"ok": False, "error": f"bad request: {e}"}) + b"\n")
                    continue
                admin = self.admins.get(req.user)
                ok = admin is not None and await loop.run_in_executor(
                    None, check_password, req.password, admin.password_scrypt)
                if not ok:
                    log.warning("admin authentication failed for %r", req.user)
                    await asyncio.sleep(0.5)
                    writer.write(msgspec.json.encode({"ok": False, "error": "authentication failed"}) + b"\n")
                    continue
                writer.write(msgspec.json.encode(self.act(admin, req)) + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def act(self, admin, req) -> dict:
        srv = self.server
        log.info("admin %s: %s %s", admin.name, req.action, req.symbol or req.level or "")
        if req.action == "status":
            return {"ok": True, "status": srv.status()}
        if req.action in ("halt", "resume", "end_of_day"):
            if not srv.journal_ok:
                return {"ok": False, "error": f"journal unavailable: {srv.journal_error}"}
            sym = 0
            if req.symbol is not None or req.action != "end_of_day":
                if req.symbol not in self.symbols:
                    return {"ok": False, "error": f"unknown symbol {req.symbol!r}"}
                sym = self.symbols[req.symbol]
            kind = {"halt": CommandKind.HALT, "resume": CommandKind.RESUME, "end_of_day": CommandKind.END_OF_DAY}
            srv.submit(dict(kind=kind[req.action], symbol=sym, account=admin.id))
            srv.flush()                       # journaled before the reply, like any acknowledgement
            return {"ok": True, "seq": srv.next_cmd_seq - 1}
        if req.action == "snapshot":
            srv.snapshot(fork=True)
            return {"ok": True, "seq": srv.last_snapshot_seq}
        if req.action == "log_level":
            level = (req.level or "").upper()
            if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
                return {"ok": False, "error": f"bad level {req.level!r}"}
            logging.getLogger().setLevel(level)
            return {"ok": True}
        return {"ok": False, "error": f"unknown action {req.action!r}"}


def main(argv=None) -> int:
    """`trading-engine admin ACTION [SYMBOL|LEVEL]` (password from TRADING_ENGINE_ADMIN_PASSWORD
    or a prompt), and `trading-engine admin hash` to make a password_scrypt value."""
    p = argparse.ArgumentParser(prog="trading-engine admin")
    p.add_argument("action", choices=["status", "halt", "resume", "end_of_day", "snapshot", "log_level", "hash"])
    p.add_argument("arg", nargs="?")
    p.add_argument("--host", default=os.environ.get("TRADING_ENGINE_ADMIN_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("TRADING_ENGINE_ADMIN_PORT", "7003")))
    p.add_argument("--user", default=os.environ.get("TRADING_ENGINE_ADMIN_USER", getpass.getuser()))
    args = p.parse_args(argv)
    password = os.environ.get("TRADING_ENGINE_ADMIN_PASSWORD") or getpass.getpass("admin password: ")
    if args.action == "hash":
        print(hash_password(password))
        return 0
    req = Request(args.user, password, args.action,
                  symbol=args.arg if args.action in ("halt", "resume", "end_of_day") else None,
                  level=args.arg if args.action == "log_level" else None)

    async def call():
        reader, writer = await asyncio.open_connection(args.host, args.port)
        writer.write(msgspec.json.encode(req) + b"\n")
        line = await reader.readline()
        writer.close()
        return msgspec.json.decode(line)

    resp = asyncio.run(call())
    print(msgspec.json.format(msgspec.json.encode(resp)).decode())
    return 0 if resp.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
