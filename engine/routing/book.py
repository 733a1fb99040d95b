"""The consolidated book and the split of a marketable order across venues.

Each venue's book is the last DEPTH snapshot it sent for the symbol (the router subscribes to
every symbol's depth at every venue it trades): bids and asks as (price, qty) lists, best
first, integer units. A venue that goes down has its books dropped at once.

The split (allocate) is a greedy walk over every venue's levels within the client's limit,
cheapest all-in price first: for a buy price x (10000 + taker fee bps), for a sell the
proceeds price x (10000 - taker fee bps), highest first; ties go to the venue ranked first
(score order, then [[venues]] order). Each unit of quantity costs its level's all-in price
independently of the others, so taking the cheapest units first is the optimum (the brute
force in tests/test_routing.py checks it), and no unit is bought at an all-in price worse than
one left on any venue's shown book. Integer arithmetic only.

allocate is the reference: the router routes with engine/routing/decide.pyx (Split.children, the
same walk over the same books kept as arrays), and tests/test_routing_split.py checks that the two
agree over seeded random books.
"""
from __future__ import annotations

from protocol.codes import Side

BPS = 10_000


class ConsolidatedBook:
    """Per symbol, per venue: the last depth snapshot (bids, asks best first)."""

    def __init__(self, slots: dict[int, int] | None = None, split=None) -> None:
        self.books: dict[int, dict[int, tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]]] = {}
        self.seq = 0                        # bumped at every update (consolidated market data's seq)
        self.slots = slots or {}            # symbol -> its slot in split (the router's symbols)
        self.split = split                  # engine/routing/decide.pyx Split: the same books as arrays

    def update(self, symbol: int, venue: int, bids: list[tuple[int, int, int]],
               asks: list[tuple[int, int, int]]) -> None:
        """A venue's new snapshot: (price, qty, orders) per level, best first."""
        self.books.setdefault(symbol, {})[venue] = (bids, asks)
        slot = self.slots.get(symbol)
        if slot is not None and self.split is not None:
            self.split.update(slot, venue, bids, asks)
        self.seq += 1

    def drop_venue(self, venue: int) -> list[int]:
        """A venue went down: forget its books; the symbols that changed."""
        touched = [s for s, per in self.books.items() if per.pop(venue, None) is not None]
        if self.split is not None:
            self.split.drop(venue)
        if touched:
            self.seq += 1
        return touched

    def venue_books(self, symbol: int) -> dict[int, tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]]:
        return self.books.get(symbol, {})

    def depth(self, symbol: int, levels: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """The consolidated top `levels` per side at shown prices (qty and orders summed over venues)."""
        bids: dict[int, list[int]] = {}
        asks: dict[int, list[int]] = {}
        for b, a in self.books.get(symbol, {}).values():
            for side, acc in ((b, bids), (a, asks)):
                for price, qty, orders in side:
                    lv = acc.setdefault(price, [0, 0])
                    lv[0] += qty
                    lv[1] += orders
        top_b = sorted(bids.items(), reverse=True)[:levels]
        top_a = sorted(asks.items())[:levels]
        return [(p, q, o) for p, (q, o) in top_b], [(p, q, o) for p, (q, o) in top_a]


def allocate(books: dict[int, tuple[list, list]], side: int, qty: int, limit: int | None,
             taker_bps: dict[int, int], rank: dict[int, int]) -> tuple[list[tuple[int, int, int]], int]:
    """Split `qty` over the venues' shown liquidity: ([(venue, qty, worst price)], unallocated).

    books: venue -> (bids, asks) of one symbol; side: the order's; limit: the client's limit
    price (None: a market order); taker_bps: venue -> taker fee; rank: venue -> tie-break order
    (lower first; a venue missing from it is not used)."""
    cands = []
    if side == Side.BUY:
        for v, (_, asks) in books.items():
            if v not in rank:
                continue
            f = BPS + taker_bps[v]
            for price, q, _ in asks:
                if limit is not None and price > limit:
                    break
                cands.append((price * f, rank[v], price, q, v))
    else:
        for v, (bids, _) in books.items():
            if v not in rank:
                continue
            f = BPS - taker_bps[v]
            for price, q, _ in bids:
                if limit is not None and price < limit:
                    break
                cands.append((-price * f, rank[v], -price, q, v))
    cands.sort()
    left = qty
    per: dict[int, list[int]] = {}
    for _, _, price, q, v in cands:
        if left <= 0:
            break
        take = q if q < left else left
        left -= take
        acc = per.get(v)
        if acc is None:
            per[v] = [take, abs(price)]
        else:
            acc[0] += take
            acc[1] = abs(price)             # walked best first per venue: the last is the worst
    return [(v, q, p) for v, (q, p) in per.items()], left
