"""The admin listener and `trading-engine admin ...`.

A separate TCP listener (loopback by default; the trading port accepts no admin
message at all) speaking JSON lines: one request object per line, one response
object per line. Every request carries the operator's name and password; the
password is checked against its scrypt hash on a thread of its own (hashlib.scrypt
releases the GIL: 0.15-0.5 s of CPU that must never run on the engine thread), at most
server.admin_password_checks (1 or 2) at once and off the engine's CPU (server.helper_setup).
An unknown operator name costs the same scrypt (a dummy hash), so names cannot be told
apart by timing. Failures are answered after a delay and counted per address and per
operator name (engine/auth.py); at server.admin_lockout_failures from one address, or
server.admin_operator_lockout_failures for one name, requests are refused without a check
for server.lockout_s. A connection that has authenticated is not charged again for later
requests with the same user and password.

Every state change is a core command, submitted and flushed (journaled) before
the reply, with Command.operator = the operator's id from [[admins]], so the
journal records who did it (`trading-engine journal dump` shows it). The reply
says what the engine did: the command's events, in human units (a rejected
withdrawal's reason, the orders a kill switch cancelled, a liquidation a mark
set off); `ok` is false when the engine rejected the command. Actions:
  status                            engine, session, risk and queue counters (pending batch,
                                    unsent output per session)
  halt / resume SYMBOL              symbol state (core HALT / RESUME)
  end_of_day [SYMBOL]               cancel DAY orders (core END_OF_DAY; all symbols if none)
  deposit / withdraw ACCOUNT AMOUNT cash in the quote currency (risk.cash_decimals)
  set_limit SCOPE [TARGET] KIND [VALUE] [--clear]
                                    SCOPE default|account|symbol|strategy; KIND a [risk.defaults]
                                    key (max_order_value, initial_margin, ...); VALUE in the units
                                    the config takes (engine/config.py RiskLimits, one conversion)
  kill ACCOUNT|all on|off           kill switch: cancels everything and blocks new orders
  account_state ACCOUNT STATE       active | reduce_only | suspended
  kyc ACCOUNT|default STATE         KYC state: pending | verified | blocked, or clear (the account
                                    follows the default again; the default is the config's
                                    risk.kyc_default, re-applied at start-up)
  restrict / allow ACCOUNT SYMBOL   per-account symbol restriction
  disposition ALERT STATE [--note TEXT]
                                    a surveillance alert (its id, type:seq:n) reviewed | escalated |
                                    dismissed: journaled with the operator (SURVEILLANCE.md); the
                                    note's text beside the journal, its digest in the command
  mark SYMBOL PRICE                 the mark price (core MARK_PRICE)
  reset_breaker                     the engine-wide error-rate circuit breaker and every account's lockout
  var_update ROWS                   the risk worker's cycle (engine/riskworker.py): one VAR_UPDATE per row
                                    [account, symbol, value, charged_at, model_seq, model_ts_ns], one flush
  positions / portfolio ACCOUNT     read-only: an account's risk figures
  limits                            read-only: every limit set, by scope
  add_account NAME [--id N] [--stp-group G]   a new trading account, at run time (below)
  snapshot                          write a snapshot now
  log_level LEVEL                   change the log level

Adding an account at run time. Replay must stay deterministic and secrets must never reach
the journal or a log, so an account is two facts kept in two places:
  - that it exists (id, STP group): the core command ADD_ACCOUNT, journaled and replayed like any
    other (event ACCOUNT_ADDED; engine snapshots carry it like the config's accounts);
  - how it logs on (name, signing key): the admin supplies a secret (at least 16 characters,
    from TRADING_ENGINE_NEW_ACCOUNT_SECRET, --secret-file or a prompt, never the command line);
    the server derives the signing key from it exactly as for a configured account
    (config.signing_key) and keeps only that key, in `added_accounts.json` beside the journal
    (the service's state directory), owner-only (0600), written and fsynced *before* the command
    is journaled. The server loads the file at start-up, before recovery, and after recovery
    drops an entry whose ADD_ACCOUNT never reached the journal (a crash between the two writes).
    The journal never holds a key, so copying a journal for analysis leaks no credential; losing
    the file loses only the added accounts' logons (re-add with the same id is refused: the
    account exists; give the account a config entry with a secret instead).
Config accounts stay the config's: an added account's id or name must not be in the config
(start-up refuses a file that collides with it).
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import hmac
import inspect
import json
import logging
import os
import stat

import msgspec

from engine import config as cfgmod
from engine import notes
from engine.snapshot import fsync_dir
from protocol.codes import (AccountState, AlertType, CancelReason, CommandKind, Disposition, EventKind, KycState,
                            LimitScope, Reject, Side, SymbolState)
from protocol.units import from_units, to_units

log = logging.getLogger("trading-engine")

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1
ADDED_ACCOUNTS = "added_accounts.json"
MIN_SECRET = cfgmod.MIN_SECRET         # an added account's secret: as a configured one
MAX_EVENTS = 1000                      # listed in a reply (the journal has them all)
MAX_VAR_ROWS = 1000                    # VAR_UPDATE rows in one var_update request (a line is at most 64 KiB)
MAX_REQUEST_BYTES = 1 << 22             # one request line (a risk worker's var_update rows); longer is refused
MAX_RESPONSE_BYTES = 1 << 28            # what the admin command reads of one answer (every account's limits)
AUTH_FAILURE_DELAY_S = 0.5             # a failed authentication is answered after this


class Request(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    user: str
    password: str
    action: str
    symbol: str | None = None
    level: str | None = None
    account: str | None = None         # a name or an id; kill: "all"
    amount: str | None = None          # deposit / withdraw, quote currency
    scope: str | None = None           # set_limit
    target: str | None = None
    kind: str | None = None
    value: str | None = None
    clear: bool = False
    switch: str | None = None          # kill: on / off
    state: str | None = None           # account_state
    price: str | None = None           # mark
    alert: str | None = None           # disposition: the alert's id (type:seq:n)
    note: str | None = None            # disposition: free text (engine/notes.py: its digest is journaled)
    name: str | None = None            # add_account
    id: int | None = None
    stp_group: int = 0
    secret: str | None = None          # add_account: never logged, never journaled
    rows: list[tuple[int, int, int, int, int, int]] | None = None    # var_update


class AdminError(Exception):
    pass


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


def _name(enum, value) -> str:
    try:
        return enum(value).name.lower()
    except ValueError:
        return str(value)


class AddedAccounts:
    """Accounts added at run time: name and signing key in an owner-only file beside the journal
    (see the module docstring). Loaded into server.accounts at start-up, before recovery."""

    def __init__(self, server, account_cls):
        self.server = server
        self.account_cls = account_cls
        self.path = os.path.join(server.cfg.journal.path, ADDED_ACCOUNTS)
        self.entries: dict[int, dict] = {}
        if not os.path.exists(self.path):
            return
        mode = os.stat(self.path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise RuntimeError(f"{self.path} must be readable by its owner only (chmod 600): it holds signing keys")
        with open(self.path, "rb") as f:
            data = msgspec.json.decode(f.read())
        config_ids = {a.id for a in server.cfg.accounts}
        config_names = {a.name for a in server.cfg.accounts}
        for e in data["accounts"]:
            if e["id"] in config_ids or e["name"] in config_names:
                raise RuntimeError(f"{self.path}: account {e['name']} (id {e['id']}) was added at run time and "
                                   "is also in the config: remove one of them")
            self.entries[e["id"]] = e
            server.accounts[e["id"]] = account_cls(e["id"], e["name"], bytes.fromhex(e["key"]), server.next_seq)

    def _write(self):
        tmp = self.path + ".tmp"
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, msgspec.json.encode({"accounts": sorted(self.entries.values(), key=lambda e: e["id"])}))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(os.path.dirname(self.path) or ".")

    def put(self, acct_id: int, name: str, stp_group: int, key: bytes):
        self.entries[acct_id] = {"id": acct_id, "name": name, "stp_group": stp_group, "key": key.hex()}
        self._write()

    def drop(self, acct_id: int):
        if self.entries.pop(acct_id, None) is not None:
            self._write()

    def activate(self, acct_id: int):
        e = self.entries[acct_id]
        self.server.accounts[acct_id] = self.account_cls(acct_id, e["name"], bytes.fromhex(e["key"]),
                                                         self.server.next_seq)

    def prune(self):
        """After recovery: an entry whose ADD_ACCOUNT is not in the journal never existed."""
        defined = self.server.engine.acct_arr["defined"]
        for acct_id in [i for i in self.entries if not defined[i]]:
            log.warning("account %s (id %d) was added at run time but its ADD_ACCOUNT is not in the journal: "
                        "dropped", self.entries[acct_id]["name"], acct_id)
            self.server.accounts.pop(acct_id, None)
            self.drop(acct_id)


class LineTooLong(Exception):
    """An admin request line above MAX_REQUEST_BYTES: answered with an error, the connection closed."""


async def _readline(reader):
    try:
        return await reader.readline()
    except ValueError as e:                  # asyncio's LimitOverrunError, re-raised by readline as this
        raise LineTooLong() from e


class AdminListener:
    def __init__(self, server):
        self.server = server
        # an operator with password_env: hashed here, the password itself is not kept
        self.admins = {a.name: a if a.password_scrypt is not None else
                       msgspec.structs.replace(a, password_scrypt=hash_password(cfgmod.admin_password(a)[0]))
                       for a in server.cfg.admins}
        self.symbols = {s.name: s for s in server.cfg.symbols}
        self.symbols_by_id = {s.id: s for s in server.cfg.symbols}
        self.tcp = None
        self.actions = {
            "status": self.status, "halt": self.symbol_state, "resume": self.symbol_state,
            "end_of_day": self.end_of_day, "deposit": self.cash, "withdraw": self.cash, "set_limit": self.set_limit,
            "kill": self.kill, "account_state": self.account_state, "kyc": self.kyc, "restrict": self.restrict,
            "allow": self.restrict, "disposition": self.disposition,
            "mark": self.mark, "reset_breaker": self.reset_breaker, "positions": self.positions,
            "portfolio": self.portfolio, "limits": self.limits, "add_account": self.add_account,
            "snapshot": self.snapshot, "log_level": self.log_level, "var_update": self.var_update,
        }
        # an unknown operator's password is checked against this: the cost of the first operator's
        # hash (`admin hash` gives every operator the same), a salt and hash that match no password
        try:
            _, n, r, p, _, _ = next(iter(self.admins.values())).password_scrypt.split("$")
            int(n), int(r), int(p)
        except (StopIteration, ValueError):
            n, r, p = SCRYPT_N, SCRYPT_R, SCRYPT_P
        self.dummy_hash = f"scrypt${n}${r}${p}${'00' * 16}${'00' * 32}"

    async def start(self, host, port):
        self.tcp = await asyncio.start_server(self.handle, host, port, limit=MAX_REQUEST_BYTES)
        return self.tcp.sockets[0].getsockname()[1]

    def close(self):
        if self.tcp is not None:
            self.tcp.close()

    async def handle(self, reader, writer):
        authed = None                      # (user, password) this connection has proven
        peer = (writer.get_extra_info("peername") or ("?",))[0]
        try:
            while line := await _readline(reader):
                try:
                    req = msgspec.json.decode(line, type=Request)
                except msgspec.DecodeError as e:
                    writer.write(msgspec.json.encode({"ok": False, "error": f"bad request: {e}"}) + b"\n")
                    continue
                admin = self.admins.get(req.user)
                if authed is not None and authed[0] == req.user and \
                        hmac.compare_digest(authed[1], req.password.encode()):
                    ok = True
                else:
                    ok = await self.authenticate(admin, req, peer)
                authed = (req.user, req.password.encode()) if ok else None
                if not ok:
                    await asyncio.sleep(AUTH_FAILURE_DELAY_S)
                    writer.write(msgspec.json.encode({"ok": False, "error": "authentication failed"}) + b"\n")
                    continue
                writer.write(msgspec.json.encode(await self.act(admin, req)) + b"\n")
                await writer.drain()
        except LineTooLong:
            writer.write(msgspec.json.encode(
                {"ok": False, "error": f"request line above {MAX_REQUEST_BYTES} bytes"}) + b"\n")
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def authenticate(self, admin, req, peer) -> bool:
        """One scrypt check, whether the operator exists or not (an unknown name is checked against
        a dummy hash of the same cost: both failures take as long); none while the address or the
        name is locked out (engine/auth.py). Checks run at most server.admin_password_checks at
        once, on threads off the engine's CPU."""
        auth = self.server.auth
        if auth.admin_locked(req.user, peer):
            auth.admin_failed(req.user, peer, locked=True)
            return False
        ok = await auth.admin_checks.run(check_password, req.password,
                                         admin.password_scrypt if admin is not None else self.dummy_hash)
        if ok and admin is not None:
            return True
        auth.admin_failed(req.user, peer, locked=False)
        return False

    async def act(self, admin, req) -> dict:
        what = {k: v for k, v in msgspec.structs.asdict(req).items()
                if k not in ("user", "password", "action", "secret", "rows") and v not in (None, False)}
        if req.rows is not None:
            what["rows"] = len(req.rows)
        log.info("admin %s: %s %s", admin.name, req.action, json.dumps(what) if what else "",
                 extra={"event": "admin_action", "operator": admin.name, "action": req.action, "request": what})
        handler = self.actions.get(req.action)
        if handler is None:
            return {"ok": False, "error": f"unknown action {req.action!r}"}
        try:
            out = handler(admin, req)
            return await out if inspect.isawaitable(out) else out
        except AdminError as e:
            return {"ok": False, "error": str(e)}

    # -- arguments --
    def _account(self, ref, allow_all=False) -> int:
        """An account by name or id (0 for "all" where allowed)."""
        if ref is None:
            raise AdminError("give an account (name or id)")
        if allow_all and ref == "all":
            return 0
        accounts = self.server.accounts
        for a in accounts.values():
            if a.name == ref:
                return a.id
        if ref.isdigit() and int(ref) in accounts:
            return int(ref)
        raise AdminError(f"unknown account {ref!r}")

    def _symbol(self, ref):
        if ref not in self.symbols:
            raise AdminError(f"unknown symbol {ref!r}")
        return self.symbols[ref]

    def _risk(self):
        r = self.server.engine.risk
        if r is None:
            raise AdminError("risk is off ([risk] enabled = false)")
        return r

    @staticmethod
    def _units(value, decimals, step=1, what="value", step_name="step") -> int:
        if value is None:
            raise AdminError(f"give the {what}")
        try:
            return to_units(value, decimals, step, what, step_name)
        except (ValueError, TypeError) as e:
            raise AdminError(str(e)) from None

    # -- commands: journaled before the reply --
    async def command(self, admin, **fields) -> dict:
        """Submit one core command as this operator into the open batch (after what the sessions
        sent before it), wait for its commit without blocking the loop, and describe its events."""
        srv = self.server
        if not srv.journal_ok or srv.rebuilding:
            raise AdminError(f"journal unavailable: {srv.journal_error}")
        seq = srv.next_cmd_seq
        srv.submit(dict(fields, operator=admin.id))
        if srv.next_cmd_seq <= seq or not await srv.after_commit():
            raise AdminError(f"not applied: journal unavailable: {srv.journal_error}")
        events = self._events(seq)
        out = {"ok": True, "seq": seq}
        if events is None:
            return out                    # durability none: no journal to read the events back from
        rejected = [e for e in events if e["kind"] == EventKind.REJECTED]
        if rejected:
            out["ok"] = False
            out["error"] = Reject(int(rejected[0]["reason"])).name
        out["events"] = [self.describe(e) for e in events[:MAX_EVENTS]]
        if len(events) > MAX_EVENTS:                # e.g. a global kill switch on a full book
            out["events_total"] = len(events)
        return out

    def _events(self, seq):
        journal = self.server.journal
        if journal is None:
            return None
        for _, events in journal.read_from(seq):
            return events[events["seq"] == seq]
        return []

    def _account_name(self, acct_id):
        a = self.server.accounts.get(acct_id)
        return a.name if a is not None else acct_id

    def describe(self, e) -> dict:
        """One event of an admin command, in human units."""
        kind = int(e["kind"])
        sym = self.symbols_by_id.get(int(e["symbol"]))
        r = self.server.engine.risk
        cash = (lambda v: from_units(int(v), r.cash_decimals)) if r is not None else int
        price = (lambda v: from_units(int(v), sym.price_decimals)) if sym else int
        qty = (lambda v: from_units(int(v), sym.qty_decimals)) if sym else int
        out = {"event": _name(EventKind, kind)}
        if int(e["account"]):
            out["account"] = self._account_name(int(e["account"]))
        if sym is not None:
            out["symbol"] = sym.name
        if kind == EventKind.REJECTED:
            out["reason"] = Reject(int(e["reason"])).name
        elif kind == EventKind.BALANCE:
            out.update(amount=cash(e["qty"]), cash=cash(e["leaves"]))
        elif kind == EventKind.ACCOUNT_STATE:
            if int(e["account"]):
                out["state"] = _name(AccountState, int(e["reason"]))
            else:
                out["account"] = "all"
            out["kill_switch"] = bool(e["qty"])
        elif kind == EventKind.LIMIT_SET:
            if int(e["reason"]) == 0:      # a RESTRICT_SYMBOL
                out["event"] = "symbol_restriction"
                out["restricted"] = bool(e["qty"])
            else:
                scope = LimitScope(int(e["side"]))
                out.update(scope=scope.name.lower(), kind=cfgmod.LIMIT_FIELD[int(e["reason"])])
                if scope == LimitScope.STRATEGY:
                    out["strategy"] = int(e["order_id"])
                if int(e["flags"]) & 1:
                    out["cleared"] = True
                else:
                    out["value"] = cfgmod.limit_human(int(e["reason"]), int(e["qty"]),
                                                      r.cash_decimals if r is not None else 0,
                                                      sym.qty_decimals if sym else 0)
        elif kind == EventKind.MARK:
            out["price"] = price(e["price"])
        elif kind == EventKind.BREAKER:
            out["tripped" if int(e["reason"]) == 1 else "reset"] = True
            if sym is not None and int(e["reason"]) == 1:
                out["price"] = price(e["price"])
            elif sym is None:
                out["breaker"] = "account reject rate" if int(e["account"]) else "engine-wide"
        elif kind == EventKind.SYMBOL_STATE:
            out["state"] = _name(SymbolState, int(e["reason"]))
        elif kind == EventKind.ACCOUNT_ADDED:
            out["stp_group"] = int(e["qty"])
        elif kind == EventKind.ALERT_DISPOSITION:
            out.update(alert=f"{_name(AlertType, int(e['reason']))}:{int(e['order_id'])}:{int(e['qty'])}",
                       disposition=_name(Disposition, int(e["side"])))
            if hexd := notes.hexdigest(int(e["price"]), int(e["leaves"])):
                out["note_digest"] = hexd
        elif kind == EventKind.KYC_STATE:
            out["account"] = out.get("account", "default")
            out["kyc"] = _name(KycState, int(e["reason"]))
            if int(e["account"]):
                out["own"] = bool(e["qty"])
        elif kind == EventKind.VAR_SET:
            out.update(value=int(e["qty"]), charged_at=int(e["price"]), model_seq=int(e["order_id"]),
                       model_ts_ns=int(e["leaves"]))
        elif kind == EventKind.MASS_CANCEL_DONE:
            out["count"] = int(e["qty"])
        else:                              # order events: cancels, a liquidation's order and fills
            out.update(order_id=int(e["order_id"]), side=_name(Side, int(e["side"])), price=price(e["price"]),
                       qty=qty(e["qty"]), leaves=qty(e["leaves"]))
            if kind == EventKind.CANCELLED:
                out["reason"] = _name(CancelReason, int(e["reason"]))
            if kind == EventKind.FILL:
                out.update(trade_id=int(e["trade_id"]), maker_account=self._account_name(int(e["other_account"])),
                           maker_order_id=int(e["other_order_id"]))
            if int(e["flags"]) & 1:
                out["liquidation"] = True
        return out

    def symbol_state(self, admin, req):
        sym = self._symbol(req.symbol)
        return self.command(admin, kind=CommandKind.HALT if req.action == "halt" else CommandKind.RESUME,
                            symbol=sym.id)

    def end_of_day(self, admin, req):
        return self.command(admin, kind=CommandKind.END_OF_DAY,
                            symbol=self._symbol(req.symbol).id if req.symbol is not None else 0)

    def cash(self, admin, req):
        r = self._risk()
        a = self._account(req.account)
        amount = self._units(req.amount, r.cash_decimals, what="amount")
        return self.command(admin, kind=CommandKind.DEPOSIT if req.action == "deposit" else CommandKind.WITHDRAW,
                            account=a, qty=amount)

    def set_limit(self, admin, req):
        r = self._risk()
        try:
            scope = LimitScope[(req.scope or "").upper()]
        except KeyError:
            raise AdminError(f"scope {req.scope!r}: one of default, account, symbol, strategy") from None
        fields = dict(kind=CommandKind.SET_LIMIT, side=scope)
        qty_decimals = 0
        if scope == LimitScope.DEFAULT:
            if req.target is not None:
                raise AdminError("the default scope takes no target")
        elif scope == LimitScope.ACCOUNT:
            fields["account"] = self._account(req.target)
        elif scope == LimitScope.SYMBOL:
            sym = self._symbol(req.target)
            fields["symbol"], qty_decimals = sym.id, sym.qty_decimals
        else:
            if req.target is None or not req.target.isdigit():
                raise AdminError(f"strategy target {req.target!r}: a strategy id")
            fields["strategy"] = int(req.target)
        if req.clear == (req.value is not None):
            raise AdminError("give a value, or --clear")
        try:                              # exactly as the config takes it (RiskLimits), one conversion
            kind = cfgmod.limit_kind(scope, req.kind or "", "set_limit", scope.name.lower())
            value = 0
            if not req.clear:
                limits = msgspec.convert({req.kind: req.value}, cfgmod.RiskLimits, strict=False)
                value = cfgmod.scope_limits(scope, limits, r.cash_decimals, qty_decimals, "set_limit",
                                            scope.name.lower())[kind]
        except (msgspec.ValidationError, cfgmod.ConfigError) as e:
            raise AdminError(str(e)) from None
        fields.update(order_type=kind, qty=value, flags=1 if req.clear else 0)
        return self.command(admin, **fields)

    def kill(self, admin, req):
        self._risk()
        if req.switch not in ("on", "off"):
            raise AdminError("kill ACCOUNT|all on|off")
        return self.command(admin, kind=CommandKind.KILL_SWITCH, account=self._account(req.account, allow_all=True),
                            side=1 if req.switch == "on" else 2)

    def account_state(self, admin, req):
        self._risk()
        states = {"active": AccountState.ACTIVE, "reduce_only": AccountState.REDUCE_ONLY,
                  "suspended": AccountState.SUSPENDED}
        if req.state not in states:
            raise AdminError(f"state {req.state!r}: one of {', '.join(states)}")
        return self.command(admin, kind=CommandKind.SET_ACCOUNT_STATE, account=self._account(req.account),
                            side=states[req.state])

    def kyc(self, admin, req):
        self._risk()
        states = {"pending": KycState.PENDING, "verified": KycState.VERIFIED, "blocked": KycState.BLOCKED}
        if req.state not in states and req.state != "clear":
            raise AdminError(f"state {req.state!r}: one of {', '.join(states)}, clear")
        account = 0 if req.account == "default" else self._account(req.account)
        if req.state == "clear":
            return self.command(admin, kind=CommandKind.SET_KYC, account=account, flags=1)
        return self.command(admin, kind=CommandKind.SET_KYC, account=account, side=states[req.state])

    def disposition(self, admin, req):
        try:
            typ, seq, n = (req.alert or "").rsplit(":", 2)
            kind, seq, n = AlertType[typ.upper()], int(seq), int(n)
            if seq <= 0 or n < 0:
                raise ValueError
        except (ValueError, KeyError):
            raise AdminError(f"alert {req.alert!r}: an alert id, type:seq:n (`trading-engine surveil alerts`)") from None
        try:
            state = Disposition[(req.state or "").upper()]
        except KeyError:
            raise AdminError(f"state {req.state!r}: one of reviewed, escalated, dismissed") from None
        a = b = 0
        if req.note is not None:
            if (why := notes.check(req.note)) is not None:
                raise AdminError(why)
            a, b = notes.to_fields(notes.append(self.server.cfg.journal.path, req.note))   # fsynced first
        return self.command(admin, kind=CommandKind.ALERT_DISPOSITION, order_id=seq, qty=n, order_type=kind,
                            side=state, price=a, stop_price=b)

    def restrict(self, admin, req):
        self._risk()
        return self.command(admin, kind=CommandKind.RESTRICT_SYMBOL, account=self._account(req.account),
                            symbol=self._symbol(req.symbol).id, side=1 if req.action == "restrict" else 2)

    def mark(self, admin, req):
        self._risk()
        sym = self._symbol(req.symbol)
        return self.command(admin, kind=CommandKind.MARK_PRICE, symbol=sym.id,
                            price=self._units(req.price, sym.price_decimals, sym.tick_size, "price", "tick"))

    def reset_breaker(self, admin, req):
        self._risk()
        return self.command(admin, kind=CommandKind.RESET_BREAKER)

    async def var_update(self, admin, req):
        """The risk worker's rows (RISK.md "Pre-trade VaR limit"), each a VAR_UPDATE command, journaled
        with the sessions' commands (the loop never waits on the commit); the reply counts them and lists
        the rejected ones (row index, reason)."""
        self._risk()
        rows = req.rows or []
        if len(rows) > MAX_VAR_ROWS:
            raise AdminError(f"at most {MAX_VAR_ROWS} rows")
        for row in rows:
            a, sym, value, charged, mseq, ts = row
            if not (0 <= a < 1 << 32 and 0 <= sym < 1 << 32 and 0 <= mseq < 1 << 64 and
                    all(-(1 << 63) <= x < 1 << 63 for x in (value, charged, ts))):
                raise AdminError(f"row {list(row)}: a field outside its type")
        srv = self.server
        if not srv.journal_ok or srv.rebuilding:
            raise AdminError(f"journal unavailable: {srv.journal_error}")
        seq = srv.next_cmd_seq
        for a, sym, value, charged, mseq, ts in rows:
            srv.submit(dict(kind=CommandKind.VAR_UPDATE, account=a, symbol=sym, qty=value, price=charged,
                            order_id=mseq, expire_ts_ns=ts, operator=admin.id))
        if srv.next_cmd_seq < seq + len(rows) or not await srv.after_commit():
            raise AdminError(f"not applied: journal unavailable: {srv.journal_error}")
        out = {"ok": True, "seq": seq, "applied": len(rows), "rejected": []}
        journal = srv.journal
        if journal is None or not rows:
            return out
        for _, events in journal.read_from(seq):
            bad = events[(events["kind"] == EventKind.REJECTED) & (events["seq"] >= seq) &
                         (events["seq"] < seq + len(rows))]
            out["rejected"] += [[int(e["seq"]) - seq, Reject(int(e["reason"])).name] for e in bad[:MAX_EVENTS]]
            if int(events["seq"][-1]) >= seq + len(rows) - 1:
                break
        out["ok"] = not out["rejected"]
        return out

    async def add_account(self, admin, req):
        srv = self.server
        name = req.name or ""
        if not name or len(name) > 64 or not name.isprintable() or name == "all" or name.isdigit():
            raise AdminError(f"account name {name!r}: 1..64 printable characters, not a number or 'all'")
        if any(a.name == name for a in srv.accounts.values()):
            raise AdminError(f"account name {name!r} is taken")
        if req.secret is None or len(req.secret) < MIN_SECRET:
            raise AdminError(f"the new account's secret must have at least {MIN_SECRET} characters")
        defined = srv.engine.acct_arr["defined"]
        acct_id = req.id
        if acct_id is None:
            acct_id = next((i for i in range(1, len(defined)) if not defined[i] and i not in srv.accounts), None)
            if acct_id is None:
                raise AdminError("no free account id (engine.max_accounts)")
        if not 0 < acct_id < len(defined) or defined[acct_id] or acct_id in srv.accounts:
            raise AdminError(f"account id {acct_id}: taken or outside 1..{len(defined) - 1}")
        if not 0 <= req.stp_group < 1 << 32:
            raise AdminError("stp_group: 0..2**32-1")
        store = srv.added_accounts
        store.put(acct_id, name, req.stp_group, cfgmod.signing_key(req.secret.encode()))   # fsynced first
        try:
            out = await self.command(admin, kind=CommandKind.ADD_ACCOUNT, account=acct_id, qty=req.stp_group)
        except AdminError:
            store.drop(acct_id)
            raise
        if out["ok"]:
            store.activate(acct_id)
            for e in out.get("events", ()):
                if e.get("account") == acct_id:
                    e["account"] = name
            log.info("account %s (id %d) added by %s", name, acct_id, admin.name,
                     extra={"event": "account_added", "account": name, "account_id": acct_id, "operator": admin.name})
        else:
            store.drop(acct_id)
        out["account"] = {"id": acct_id, "name": name, "stp_group": req.stp_group}
        return out

    # -- read-only --
    def positions(self, admin, req):
        r = self._risk()
        a = self._account(req.account)
        cash = lambda v: from_units(int(v), r.cash_decimals)     # noqa: E731
        rows = []
        for p in r.positions(a):
            s = self.symbols_by_id[p["symbol"]]
            rows.append(dict({k: from_units(p[k], s.qty_decimals) for k in ("position", "open_buy", "open_sell")},
                             symbol=s.name, avg_price=from_units(p["avg_price"], s.price_decimals),
                             mark=from_units(p["mark"], s.price_decimals),
                             **{k: cash(p[k]) for k in ("realized", "fees", "unrealized", "exposure",
                                                        "worst_exposure", "initial_margin", "maintenance_margin")}))
        return {"ok": True, "account": self._account_name(a), "positions": rows}

    def portfolio(self, admin, req):
        r = self._risk()
        a = self._account(req.account)
        pf = r.portfolio(a)
        out = {k: from_units(pf[k], r.cash_decimals) for k in (
            "cash", "equity", "unrealized", "realized", "fees", "exposure", "worst_exposure", "initial_margin",
            "maintenance_margin", "available", "daily_pnl")}
        out.update(leverage=None if pf["leverage_bps"] is None else from_units(pf["leverage_bps"], 4),
                   state=_name(AccountState, pf["state"]), kill_switch=bool(pf["kill"] or pf["kill_all"]),
                   kyc=_name(KycState, pf["kyc"]),
                   open_orders=int(self.server.engine.acct_arr["open"][a]))
        return {"ok": True, "account": self._account_name(a), "portfolio": out}

    def limits(self, admin, req):
        r = self._risk()
        rows = []
        for scope, target, kind, value in sorted(r.limits()):
            scope = LimitScope(scope)
            sym = self.symbols_by_id.get(target) if scope == LimitScope.SYMBOL else None
            rows.append({"scope": scope.name.lower(),
                         "target": {LimitScope.DEFAULT: None, LimitScope.ACCOUNT: self._account_name(target),
                                    LimitScope.SYMBOL: sym.name if sym else target}.get(scope, target),
                         "kind": cfgmod.LIMIT_FIELD[kind],
                         "value": cfgmod.limit_human(kind, value, r.cash_decimals, sym.qty_decimals if sym else 0)})
        return {"ok": True, "limits": rows}

    def status(self, admin, req):
        srv = self.server
        status = srv.status()
        status["queue"] = {
            "pending_commands": srv.n_pending, "batch_capacity": len(srv.pending),
            "sessions": [{"session": c.session_id, "account": c.account.name if c.account else None, "peer": c.peer,
                          "output_buffer_bytes": c.transport.get_write_buffer_size()
                          if c.transport is not None and not c.closed else 0}
                         for c in sorted(srv.conns, key=lambda c: c.session_id)]}
        return {"ok": True, "status": status}

    def snapshot(self, admin, req):
        srv = self.server
        srv.snapshot(fork=True)
        return {"ok": True, "seq": srv.last_snapshot_seq}

    def log_level(self, admin, req):
        level = (req.level or "").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            return {"ok": False, "error": f"bad level {req.level!r}"}
        logging.getLogger().setLevel(level)
        return {"ok": True}


def _parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The admin actions and options, added to `p` (the `trading-engine admin` subcommand's
    parser) or to a parser of their own."""
    if p is None:
        p = argparse.ArgumentParser(prog="trading-engine admin", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    where = argparse.ArgumentParser(add_help=False)     # also after the action: `admin status --port N`
    for parser, suppress in ((p, False), (where, True)):
        parser.add_argument("--host", default=argparse.SUPPRESS if suppress else
                            os.environ.get("TRADING_ENGINE_ADMIN_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=argparse.SUPPRESS if suppress else
                            int(os.environ.get("TRADING_ENGINE_ADMIN_PORT", "7003")))
        parser.add_argument("--user", default=argparse.SUPPRESS if suppress else
                            os.environ.get("TRADING_ENGINE_ADMIN_USER", getpass.getuser()))
    sub = p.add_subparsers(dest="action", required=True)

    def action(name, *args, help=None):
        a = sub.add_parser(name, help=help, parents=[where])
        for arg in args:
            a.add_argument(arg)
        return a
    action("status", help="engine, sessions, risk, queues")
    action("halt", "symbol")
    action("resume", "symbol")
    action("end_of_day").add_argument("symbol", nargs="?")
    action("deposit", "account", "amount", help="cash in the quote currency")
    action("withdraw", "account", "amount")
    s = action("set_limit", "scope", help="set_limit SCOPE [TARGET] KIND [VALUE] [--clear]")
    s.add_argument("rest", nargs="+", metavar="[TARGET] KIND [VALUE]")
    s.add_argument("--clear", action="store_true")
    action("kill", "account", "switch", help="kill ACCOUNT|all on|off")
    action("account_state", "account", "state", help="active | reduce_only | suspended")
    action("kyc", "account", "state", help="kyc ACCOUNT|default pending|verified|blocked|clear")
    action("disposition", "alert", "state", help="disposition ALERT_ID reviewed|escalated|dismissed [--note TEXT]"
           ).add_argument("--note", help="free text, one line (kept beside the journal, its digest journaled)")
    action("restrict", "account", "symbol")
    action("allow", "account", "symbol")
    action("mark", "symbol", "price")
    action("reset_breaker")
    action("positions", "account")
    action("portfolio", "account")
    action("limits", help="every risk limit set, by scope")
    a = action("add_account", "name", help="secret from TRADING_ENGINE_NEW_ACCOUNT_SECRET, --secret-file or a prompt")
    a.add_argument("--id", type=int)
    a.add_argument("--stp-group", type=int, default=0)
    a.add_argument("--secret-file")
    action("snapshot")
    action("log_level", "level")
    action("hash", help="make a password_scrypt value for [[admins]]")
    p.set_defaults(run=run)
    return p


def _new_secret(args) -> str:
    if args.secret_file:
        if os.stat(args.secret_file).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SystemExit(f"{args.secret_file}: must be readable by its owner only (chmod 600)")
        with open(args.secret_file) as f:
            return f.read().strip()
    return os.environ.get("TRADING_ENGINE_NEW_ACCOUNT_SECRET") or getpass.getpass("the new account's secret: ")


def request(args, password) -> Request:
    fields = {k: v for k, v in vars(args).items() if k in Request.__struct_fields__ and v is not None}
    for k in ("password", "user", "secret"):
        fields.pop(k, None)
    if args.action == "set_limit":
        rest = list(args.rest)
        if args.scope != "default":
            if not rest:
                raise SystemExit("set_limit SCOPE TARGET KIND [VALUE]")
            fields["target"] = rest.pop(0)
        if not rest or len(rest) > 2:
            raise SystemExit("set_limit SCOPE [TARGET] KIND [VALUE] [--clear]")
        fields["kind"] = rest[0]
        if len(rest) == 2:
            fields["value"] = rest[1]
    if args.action == "add_account":
        fields["secret"] = _new_secret(args)
        fields["stp_group"] = args.stp_group
    return Request(user=args.user, password=password, **fields)


def main(argv=None) -> int:
    """`trading-engine admin ACTION ...` (password from TRADING_ENGINE_ADMIN_PASSWORD or a prompt)."""
    return run(_parser().parse_args(argv))


def run(args) -> int:
    """Run the parsed admin action."""
    password = os.environ.get("TRADING_ENGINE_ADMIN_PASSWORD") or getpass.getpass("admin password: ")
    if args.action == "hash":
        print(hash_password(password))
        return 0
    req = request(args, password)

    async def call():
        reader, writer = await asyncio.open_connection(args.host, args.port, limit=MAX_RESPONSE_BYTES)
        writer.write(msgspec.json.encode(req) + b"\n")
        line = await reader.readline()
        writer.close()
        return msgspec.json.decode(line)

    resp = asyncio.run(call())
    print(msgspec.json.format(msgspec.json.encode(resp)).decode())
    return 0 if resp.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
