"""The SDK against symbol shards (engine/SCALING.md "Symbol shards"): one session per shard,
each request sent to the shard that owns its symbol.

    async with ShardedClient.connect("shards.toml", account=1, secret="...") as c:
        ack = await c.place("BTCUSDT", "buy", "1", price="45000.00")     # to BTCUSDT's shard
        await c.cancel(order_id=ack.order_id, symbol="BTCUSDT")
        async for shard, report in c.reports():                           # every shard's, merged
            ...

Order ids are per shard (each engine numbers its own), so an order is named by its symbol and
order id (`cancel(order_id=..., symbol=...)`, as every order report carries its symbol), or by
its client order id: this client numbers those from one counter over all shards (above the
highest any shard has seen), so they are unique across shards, and it remembers which shard
each went to. Each shard's session has its own report sequence and gap replay (`reconnect=True`:
a shard that goes away is logged on again, and its missed reports replayed, while the others
trade on). reports() yields (shard name, report) pairs in arrival order: in sequence order per
shard, with no order between shards.

SyncShardedClient is the same surface, blocking (as SyncClient is to Client):

    with SyncShardedClient.connect("shards.toml", account=1, secret="...") as c:
        ack = c.place("BTCUSDT", "buy", "1", price="45000.00")
        for shard, report in c.reports():
            ...
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

from clients.client import (Book, Client, ExecutionReport, LoopThread, OrderInfo, Portfolio, Position, Report,
                            _Connect)
from engine import config as cfgmod


class ShardedClient:
    """Sessions with every shard of a shard directory: `ShardedClient.connect(...)` (awaitable or `async with`)."""

    def __init__(self, directory: cfgmod.ShardDirectory):
        self.directory = directory
        self.owner = {sym: s.name for s in directory.shards for sym in s.symbols}   # symbol name -> shard
        self.shards: dict[str, Client] = {}
        self.next_client_order_id = 1
        self._clid_shard: dict[int, str] = {}
        self._merged: asyncio.Queue[tuple[str, Report] | None] = asyncio.Queue()
        self._pumps: list[asyncio.Future[None]] = []

    @classmethod
    def connect(cls, directory: str | os.PathLike[str] | cfgmod.ShardDirectory, *, account: int,
                secret: str | bytes, **kw: Any) -> _Connect[ShardedClient]:
        """Log on at every shard of `directory` (a file or a loaded ShardDirectory): `await` it, or use it
        with `async with`; the keyword arguments are Client.connect's (reconnect=True: gap replay per shard)."""
        d = directory if isinstance(directory, cfgmod.ShardDirectory) else cfgmod.load_directory(directory)
        return _Connect(cls(d)._open(account, secret, kw))

    async def _open(self, account: int, secret: str | bytes, kw: dict[str, Any]) -> ShardedClient:
        d = self.directory
        try:
            for s in d.shards:
                host, port = cfgmod.shard_address(s.address)
                self.shards[s.name] = await Client.connect(host, port, account=account, secret=secret, **kw)
        except BaseException:
            await self.close()
            raise
        self.next_client_order_id = max(c.next_client_order_id for c in self.shards.values())
        self._pumps = [asyncio.ensure_future(self._pump(name, c)) for name, c in self.shards.items()]
        return self

    async def close(self) -> None:
        """Log out of every shard; reports() ends."""
        for c in self.shards.values():
            await c.close()
        if self._pumps:
            await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _pump(self, name: str, c: Client) -> None:
        async for r in c.reports():
            self._merged.put_nowait((name, r))
        self._merged.put_nowait(None)

    def shard_of(self, symbol: str) -> str:
        """The name of the shard that owns `symbol` (ValueError when no shard does)."""
        try:
            return self.owner[symbol]
        except KeyError:
            raise ValueError(f"no shard owns symbol {symbol!r}") from None

    def client(self, symbol: str) -> Client:
        """The session with the shard that owns `symbol`."""
        return self.shards[self.shard_of(symbol)]

    # -- orders --
    async def place(self, symbol: str, side: Any, qty: Any, price: Any = None, **kw: Any) -> ExecutionReport:
        """Client.place at the symbol's shard, with a client order id unique across the shards."""
        name = self.shard_of(symbol)
        # above every id any shard has seen (a shard's session logged on again may have learnt a higher one)
        self.next_client_order_id = max(self.next_client_order_id,
                                        *(c.next_client_order_id for c in self.shards.values()))
        clid = kw.pop("client_order_id", None) or self.next_client_order_id
        self.next_client_order_id = max(self.next_client_order_id, clid + 1)
        self._clid_shard[clid] = name
        return await self.shards[name].place(symbol, side, qty, price, client_order_id=clid, **kw)

    def _route(self, symbol: str | None, client_order_id: int | None) -> Client:
        if symbol is not None:
            return self.client(symbol)
        if client_order_id in self._clid_shard:
            return self.shards[self._clid_shard[client_order_id]]
        raise ValueError("order ids are per shard: give the order's symbol (or a client order id this client sent)")

    async def cancel(self, order_id: int | None = None, client_order_id: int | None = None,
                     symbol: str | None = None) -> ExecutionReport:
        """Cancel one order: by (symbol, order_id), or by a client order id (its shard as remembered, else symbol's)."""
        return await self._route(symbol, client_order_id).cancel(order_id=order_id, client_order_id=client_order_id)

    async def amend(self, symbol: str, order_id: int | None = None, client_order_id: int | None = None,
                    **kw: Any) -> ExecutionReport:
        """Client.amend at the symbol's shard (the order's symbol names its shard)."""
        return await self.client(symbol).amend(symbol, order_id=order_id, client_order_id=client_order_id, **kw)

    async def mass_cancel(self, symbol: str | None = None, side: Any = None) -> list[ExecutionReport]:
        """Every shard's (or the symbol's shard's) mass_cancel_done report."""
        targets = [self.client(symbol)] if symbol else list(self.shards.values())
        return list(await asyncio.gather(*(c.mass_cancel(symbol, side) for c in targets)))

    # -- queries --
    async def book(self, symbol: str, depth: int = 10) -> Book:
        """The symbol's book, from its shard."""
        return await self.client(symbol).book(symbol, depth)

    async def order(self, order_id: int | None = None, client_order_id: int | None = None,
                    symbol: str | None = None) -> OrderInfo | None:
        """One order's status: by (symbol, order_id) or by a client order id this client sent."""
        return await self._route(symbol, client_order_id).order(order_id=order_id, client_order_id=client_order_id)

    async def open_orders(self) -> list[OrderInfo]:
        """Every shard's live orders of the account (an order id is unique with its symbol)."""
        return [o for rows in await asyncio.gather(*(c.open_orders() for c in self.shards.values())) for o in rows]

    async def positions(self) -> list[Position]:
        """The account's positions, each from its symbol's shard."""
        names = list(self.shards)
        rows = await asyncio.gather(*(self.shards[n].positions() for n in names))
        return [p for name, ps in zip(names, rows) for p in ps if self.owner.get(p.symbol) == name]

    async def portfolios(self) -> dict[str, Portfolio]:
        """Each shard's figures of the account: its allocation of the cash, and the margin of its symbols."""
        names = list(self.shards)
        return dict(zip(names, await asyncio.gather(*(self.shards[n].portfolio() for n in names))))

    async def reports(self) -> AsyncIterator[tuple[str, Report]]:
        """(shard name, report) for every report of every shard, as they arrive; ends when every session has."""
        left = len(self.shards)
        while left:
            item = await self._merged.get()
            if item is None:
                left -= 1
                continue
            yield item

    def received_reports(self) -> list[tuple[str, Report]]:
        """The (shard, report) pairs received and not yet taken, taken now without waiting."""
        out = []
        while not self._merged.empty():
            item = self._merged.get_nowait()
            if item is not None:
                out.append(item)
        return out


class SyncShardedClient(LoopThread):
    """ShardedClient's surface, blocking: `with SyncShardedClient.connect(directory, account=..., secret=...)`.
    The asyncio ShardedClient, on a private loop in a daemon thread, is `sharded`."""

    def __init__(self, directory: str | os.PathLike[str] | cfgmod.ShardDirectory, *, account: int,
                 secret: str | bytes, **kw: Any):
        """Log on at every shard (ShardedClient.connect's arguments)."""
        super().__init__()

        async def connect() -> ShardedClient:
            return await ShardedClient.connect(directory, account=account, secret=secret, **kw)
        self.sharded: ShardedClient = self._start(connect())

    @classmethod
    def connect(cls, directory: str | os.PathLike[str] | cfgmod.ShardDirectory, *, account: int,
                secret: str | bytes, **kw: Any) -> SyncShardedClient:
        """Log on at every shard of `directory`; use it as a context manager."""
        return cls(directory, account=account, secret=secret, **kw)

    def close(self) -> None:
        """Log out of every shard and stop the private loop."""
        if self._thread.is_alive():
            self._run(self.sharded.close())
            self._stop_loop()

    @property
    def shards(self) -> dict[str, Client]:
        """The asyncio session with each shard, by name (their loop is this client's)."""
        return self.sharded.shards

    def shard_of(self, symbol: str) -> str:
        """The name of the shard that owns `symbol` (ValueError when no shard does)."""
        return self.sharded.shard_of(symbol)

    def place(self, symbol: str, side: Any, qty: Any, price: Any = None, **kw: Any) -> ExecutionReport:
        """ShardedClient.place: at the symbol's shard, client order ids unique across the shards."""
        return self._run(self.sharded.place(symbol, side, qty, price, **kw))

    def cancel(self, order_id: int | None = None, client_order_id: int | None = None,
               symbol: str | None = None) -> ExecutionReport:
        """ShardedClient.cancel: by (symbol, order_id) or a client order id this client sent."""
        return self._run(self.sharded.cancel(order_id, client_order_id, symbol))

    def amend(self, symbol: str, order_id: int | None = None, client_order_id: int | None = None,
              **kw: Any) -> ExecutionReport:
        """ShardedClient.amend at the symbol's shard."""
        return self._run(self.sharded.amend(symbol, order_id, client_order_id, **kw))

    def mass_cancel(self, symbol: str | None = None, side: Any = None) -> list[ExecutionReport]:
        """Every shard's (or the symbol's shard's) mass_cancel_done report."""
        return self._run(self.sharded.mass_cancel(symbol, side))

    def book(self, symbol: str, depth: int = 10) -> Book:
        """The symbol's book, from its shard."""
        return self._run(self.sharded.book(symbol, depth))

    def order(self, order_id: int | None = None, client_order_id: int | None = None,
              symbol: str | None = None) -> OrderInfo | None:
        """One order's status: by (symbol, order_id) or by a client order id this client sent."""
        return self._run(self.sharded.order(order_id, client_order_id, symbol))

    def open_orders(self) -> list[OrderInfo]:
        """Every shard's live orders of the account."""
        return self._run(self.sharded.open_orders())

    def positions(self) -> list[Position]:
        """The account's positions, each from its symbol's shard."""
        return self._run(self.sharded.positions())

    def portfolios(self) -> dict[str, Portfolio]:
        """Each shard's figures of the account."""
        return self._run(self.sharded.portfolios())

    def reports(self) -> Iterator[tuple[str, Report]]:
        """(shard name, report) for every report of every shard, blocking for each; ends with the sessions."""
        return self._iterate(self.sharded.reports())

    def received_reports(self) -> list[tuple[str, Report]]:
        """The (shard, report) pairs received and not yet taken, without waiting."""
        async def take() -> list[tuple[str, Report]]:
            return self.sharded.received_reports()
        return self._run(take())
