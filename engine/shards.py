"""Symbol shards: the transfer legs each shard journals, and the coordinator that moves each
account's cash between shards (`trading-engine shards coordinate|status`; engine/SCALING.md
"Symbol shards").

Each shard's risk checks only its own allocation of an account's cash, so no order waits for
another shard. The coordinator rebalances the allocations from outside the hot path:

- It reads: every shard's `shard_state` over its admin listener (per account: cash, available, and
  the last transfer leg the shard applied). It writes: transfer legs, each one journaled admin
  command on one shard (WITHDRAW on the source, then DEPOSIT on the destination; Command
  client_order_id = the transfer id, order_id = the peer shard's number, 1-based).
- Idempotence. Transfer ids rise per account. A shard keeps, per account, its last applied leg
  (id, signed amount, peer; rebuilt from the journal on replay and kept in snapshots), and
  answers a leg whose id equals it with the same amount and peer as a duplicate (nothing
  journaled), one with a lower id TRANSFER_STALE, one with the same id but other terms
  TRANSFER_MISMATCH. So a leg may be sent any number of times; it is applied once.
- Resuming after a crash (kill -9 between the legs): at start the coordinator reads every shard's
  last legs; an account whose newest leg is a withdrawal the peer has not applied (the peer's
  last id is lower) gets its deposit now, same id and amount. The coordinator keeps no state
  of its own: the shards' journals are the record.
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
from decimal import Decimal
from typing import NamedTuple

import msgspec
import numpy as np

from engine import config as cfgmod
from protocol.codes import CommandKind, EventKind
from protocol.units import from_units

log = logging.getLogger("trading-engine")

LEG_RETRY_S = 60.0                 # a leg is sent again this long while its shard does not answer
CRASH_AFTER_FIRST_LEG = "TE_SHARDS_CRASH_AFTER_FIRST_LEG"   # tests: SIGKILL itself between the two legs


class Leg(NamedTuple):
    """An account's last transfer leg applied on a shard."""
    id: int                  # the transfer id
    amount: int              # cash units: > 0 deposited here (the second leg), < 0 withdrawn (the first)
    peer: int                # the other shard's number (1-based, directory order)
    seq: int                 # the command's journal seq here


# -- on the shard (the server and its admin listener) --

def note_transfers(transfers: dict[int, Leg], cmds, events) -> None:
    """Fold a batch's applied transfer legs (DEPOSIT/WITHDRAW with a transfer id whose BALANCE event
    says it took effect) into `transfers` (account -> last leg): live, in replay and when following."""
    legs = cmds[((cmds["kind"] == CommandKind.DEPOSIT) | (cmds["kind"] == CommandKind.WITHDRAW))
                & (cmds["client_order_id"] != 0)]
    if not len(legs):
        return
    applied = set(events["seq"][events["kind"] == EventKind.BALANCE].tolist())
    for c in legs:
        if int(c["seq"]) in applied:
            sign = 1 if int(c["kind"]) == CommandKind.DEPOSIT else -1
            transfers[int(c["account"])] = Leg(int(c["client_order_id"]), sign * int(c["qty"]), int(c["order_id"]),
                                               int(c["seq"]))


def export_transfers(transfers: dict[int, Leg], state: dict) -> None:
    if transfers:                     # (snapshot arrays are never empty)
        state["server.transfers"] = np.array([(a, *leg) for a, leg in sorted(transfers.items())], dtype=np.int64)


def import_transfers(state: dict) -> dict[int, Leg]:
    rows = state.get("server.transfers")
    return {} if rows is None else {int(r[0]): Leg(*(int(x) for x in r[1:])) for r in rows}


def initial_share(total: int, cfg: cfgmod.Config) -> int:
    """This shard's part of an account's initial deposit (cash units): an equal split over the
    directory's shards, the remainder to the first, so the shards' parts add up to it exactly."""
    i, n = cfgmod.shard_number(cfg)
    return total // n + (total % n if i == 0 else 0)


# -- the coordinator --

class AdminSession:
    """One shard's admin listener: JSON lines, authenticated once per connection."""

    def __init__(self, name: str, address: str, user: str, password: str):
        self.name, self.address, self.user, self.password = name, address, user, password
        self.reader = self.writer = None

    async def call(self, action: str, **fields) -> dict:
        if self.writer is None or self.writer.is_closing():
            host, port = cfgmod.shard_address(self.address)
            self.reader, self.writer = await asyncio.open_connection(host, port, limit=1 << 28)
        req = dict(user=self.user, password=self.password, action=action, **fields)
        self.writer.write(msgspec.json.encode(req) + b"\n")
        line = await self.reader.readline()
        if not line:
            self.close()
            raise ConnectionError(f"shard {self.name} ({self.address}): admin connection closed")
        return msgspec.json.decode(line)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Coordinator:
    """Rebalances each account's cash between the directory's shards (see the module docstring)."""

    def __init__(self, directory: cfgmod.ShardDirectory, user: str, password: str):
        self.directory = directory
        self.shards = [AdminSession(s.name, s.admin, user, password) for s in directory.shards]
        self.next_id = 1              # above every transfer id any shard has seen (recover)
        self.transfers = 0            # transfers completed by this process
        self.cash_decimals = 2

    async def states(self) -> list[dict]:
        out = await asyncio.gather(*(s.call("shard_state") for s in self.shards))
        for s, st in zip(self.shards, out):
            if not st.get("ok"):
                raise RuntimeError(f"shard {s.name}: shard_state: {st.get('error')}")
        self.cash_decimals = out[0]["cash_decimals"]
        return out

    async def recover(self) -> int:
        """Finish every transfer whose withdrawal is applied and whose deposit is not; returns how many."""
        states = await self.states()
        last: dict[int, list[Leg | None]] = {}
        for i, st in enumerate(states):
            for a in st["accounts"]:
                last.setdefault(a["id"], [None] * len(states))[i] = Leg(*a["transfer"]) if a["transfer"] else None
        done = 0
        for acct, legs in sorted(last.items()):
            self.next_id = max(self.next_id, max((leg.id for leg in legs if leg is not None), default=0) + 1)
            for i, leg in enumerate(legs):
                if leg is None or leg.amount >= 0:
                    continue
                peer = legs[leg.peer - 1]
                if peer is None or peer.id < leg.id:
                    log.warning("shards: transfer %d of account %d: withdrawn on %s, not yet deposited on %s: "
                                "completing it", leg.id, acct, self.shards[i].name, self.shards[leg.peer - 1].name)
                    await self.leg(self.shards[leg.peer - 1], acct, leg.id, -leg.amount, "in", self.shards[i].name)
                    done += 1
        return done

    async def leg(self, shard: AdminSession, acct: int, tid: int, amount: int, direction: str, peer: str) -> dict:
        """One leg, sent until the shard answers it (a lost connection: sent again, as it is idempotent),
        for at most LEG_RETRY_S (then RuntimeError: a restart of the coordinator completes it)."""
        for attempt in range(int(LEG_RETRY_S / 0.5)):
            try:
                return await shard.call("transfer", account=str(acct), transfer=tid, direction=direction, peer=peer,
                                        amount=str(from_units(amount, self.cash_decimals)))
            except OSError as e:
                log.warning("shards: %s: %s; retrying the leg", shard.name, e)
                shard.close()
                await asyncio.sleep(0.5)
        raise RuntimeError(f"transfer {tid} of account {acct}: shard {shard.name} did not answer for {LEG_RETRY_S} s")

    async def transfer(self, acct: int, src: int, dst: int, amount: int) -> bool:
        """Move `amount` cash units of `acct` from shard src to shard dst (indexes): withdraw, then deposit."""
        tid = self.next_id
        self.next_id += 1
        a, b = self.shards[src], self.shards[dst]
        first = await self.leg(a, acct, tid, amount, "out", b.name)
        if not first.get("ok"):
            log.info("shards: transfer %d of account %d from %s refused: %s", tid, acct, a.name, first.get("error"))
            return False
        if os.environ.get(CRASH_AFTER_FIRST_LEG):
            os.kill(os.getpid(), signal.SIGKILL)
        second = await self.leg(b, acct, tid, amount, "in", a.name)
        if not second.get("ok"):      # e.g. its journal is down: the next cycle's recover() sends it again
            raise RuntimeError(f"transfer {tid} of account {acct}: deposit on {b.name} refused: {second.get('error')}"
                               " (the withdrawal stands: the next cycle, or a restart, completes it)")
        self.transfers += 1
        log.info("shards: transfer %d: account %d, %s from %s to %s", tid, acct,
                 from_units(amount, self.cash_decimals), a.name, b.name)
        return True

    def plan(self, states: list[dict]) -> list[tuple[int, int, int, int]]:
        """(account, source, destination, amount) for each account whose poorest shard's available is below
        threshold x its mean over the shards: from the richest shard, as much as brings both nearer the
        mean (at most the source's cash), in whole cash units."""
        c = self.directory.coordinator
        rows: dict[int, list[tuple[int, int]]] = {}
        for i, st in enumerate(states):
            st["ids"] = {a["id"] for a in st["accounts"]}
            for a in st["accounts"]:
                rows.setdefault(a["id"], [(0, 0)] * len(states))[i] = (a["available"], a["cash"])
        out = []
        for acct, figs in sorted(rows.items()):
            if (c.accounts and acct not in c.accounts) or sum(acct in st["ids"] for st in states) < len(states):
                continue                  # (an account some shard does not know could never be paid in there)
            avail = [f[0] for f in figs]
            mean = Decimal(sum(avail)) / len(avail)
            lo, hi = avail.index(min(avail)), avail.index(max(avail))
            if mean <= 0 or lo == hi or avail[lo] >= c.threshold * mean:
                continue
            amount = int(min(mean - avail[lo], avail[hi] - mean, figs[hi][1]))
            if amount > 0:
                out.append((acct, hi, lo, amount))
        return out

    async def cycle(self) -> int:
        """Read every shard, then transfer where due; returns the transfers made."""
        n = 0
        for acct, src, dst, amount in self.plan(await self.states()):
            n += await self.transfer(acct, src, dst, amount)
        return n

    async def run(self, once: bool = False, stop: asyncio.Event | None = None) -> None:
        """Every interval_ms: complete what a crash or a failure left half done (recover), then rebalance."""
        while True:
            try:
                await self.recover()
                await self.cycle()
            except (OSError, RuntimeError) as e:
                if once:
                    raise
                log.error("shards: cycle failed: %s", e)
            if once or (stop is not None and stop.is_set()):
                return
            await asyncio.sleep(self.directory.coordinator.interval_ms / 1000)

    def close(self):
        for s in self.shards:
            s.close()


async def status(directory: cfgmod.ShardDirectory, user: str, password: str) -> dict:
    """Every shard's accounts (cash, available, last transfer leg) and each account's cash summed."""
    co = Coordinator(directory, user, password)
    try:
        states = await co.states()
    finally:
        co.close()
    total: dict[int, int] = {}
    for st in states:
        for a in st["accounts"]:
            total[a["id"]] = total.get(a["id"], 0) + a["cash"]
    return {"cash_decimals": states[0]["cash_decimals"], "shards": states,
            "total_cash": {str(k): v for k, v in sorted(total.items())}}


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub = p.add_subparsers(dest="action", required=True)
    for name, what in (("coordinate", "rebalance each account's cash between the shards, every interval_ms"),
                       ("status", "every shard's accounts: cash, available, last transfer; cash summed (JSON)")):
        a = sub.add_parser(name, help=what, description=what)
        a.add_argument("--directory", required=True, help="the shard directory (TOML; engine/config.py ShardDirectory)")
        a.add_argument("--user", default=os.environ.get("TRADING_ENGINE_ADMIN_USER", getpass.getuser()),
                       help="the admin operator (TRADING_ENGINE_ADMIN_USER; password: TRADING_ENGINE_ADMIN_PASSWORD)")
        if name == "coordinate":
            a.add_argument("--once", action="store_true", help="recover, one cycle, exit")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        directory = cfgmod.load_directory(args.directory)
    except cfgmod.ConfigError as e:
        print(f"trading-engine: {e}", file=sys.stderr)
        return 2
    password = os.environ.get("TRADING_ENGINE_ADMIN_PASSWORD") or getpass.getpass("admin password: ")
    if args.action == "status":
        print(msgspec.json.format(msgspec.json.encode(asyncio.run(status(directory, args.user, password)))).decode())
        return 0
    co = Coordinator(directory, args.user, password)

    async def main():
        try:
            await co.run(once=args.once)
        finally:
            co.close()
    try:
        asyncio.run(main())
    except (OSError, RuntimeError) as e:       # --once: a shard unreachable, a leg refused
        print(f"trading-engine: shards: {e}", file=sys.stderr)
        return 1
    return 0
