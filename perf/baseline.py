"""The book a Python user might write instead: a sorted dict of price levels with
FIFO deques, price-time priority, in pure Python. Same semantics as the core on
the perf workload (limit adds rest, IOC sweeps, cancel by client order id)."""
from __future__ import annotations

import time
from bisect import insort
from collections import deque


class SortedDictBook:
    def __init__(self):
        self.levels = ({}, {})          # [0] bids, [1] asks: price -> deque of [key, qty]
        self.prices = ([], [])          # sorted ascending
        self.orders = {}                # (account, clid) -> (side index, price, entry)
        self.trades = 0
        self.done = []                  # keys of resting orders filled completely (the caller may drain it)

    def _rest(self, si, key, price, qty):
        lv = self.levels[si].get(price)
        if lv is None:
            lv = self.levels[si][price] = deque()
            insort(self.prices[si], price)
        entry = [key, qty]
        lv.append(entry)
        self.orders[key] = (si, price, entry)

    def _drop_level(self, si, price):
        del self.levels[si][price]
        self.prices[si].remove(price)

    def _sweep(self, si, price, qty):
        oi = 1 - si
        prices = self.prices[oi]
        while qty and prices:
            best = prices[-1] if oi == 0 else prices[0]
            if (si == 0 and best > price) or (si == 1 and best < price):
                break
            lv = self.levels[oi][best]
            while qty and lv:
                entry = lv[0]
                q = min(qty, entry[1])
                qty -= q
                entry[1] -= q
                self.trades += 1
                if entry[1] == 0:
                    lv.popleft()
                    del self.orders[entry[0]]
                    self.done.append(entry[0])
            if not lv:
                self._drop_level(oi, best)
        return qty

    def apply(self, op):
        """One neutral op (perf/workload.py); its symbol field is the caller's business."""
        if op[0] == "cancel":
            found = self.orders.pop((op[2], op[3]), None)
            if found:
                si, price, entry = found
                lv = self.levels[si][price]
                lv.remove(entry)
                if not lv:
                    self._drop_level(si, price)
        else:
            _, _, a, c, side, price, qty = op
            si = 0 if side == 1 else 1
            left = self._sweep(si, price, qty)
            if left and op[0] == "add":
                self._rest(si, (a, c), price, left)

def run_sorted_dict(ops, prefill=()):
    """Seconds for the flow `ops` through one SortedDictBook per symbol, after `prefill`
    (applied untimed)."""
    books = {}
    t = 0.0
    for part in (prefill, ops):
        t = time.perf_counter()
        for op in part:
            book = books.get(op[1])
            if book is None:
                book = books[op[1]] = SortedDictBook()
            book.apply(op)
            book.done.clear()
    return time.perf_counter() - t


def run_lightmatchingengine(ops, prefill=()):
    """Seconds for the same flow through the PyPI package lightmatchingengine (cancel by its own
    order id), after `prefill` (applied untimed)."""
    from lightmatchingengine.lightmatchingengine import LightMatchingEngine, Side
    e = LightMatchingEngine()
    ids = {}
    t = 0.0
    for part in (prefill, ops):
        t = time.perf_counter()
        for op in part:
            if op[0] == "cancel":
                order = ids.pop((op[2], op[3]), None)
                if order is not None and order.leaves_qty > 0:     # it asserts on cancelling a filled order
                    e.cancel_order(order.order_id, str(op[1]))
            else:
                _, sym, a, c, side, price, qty = op
                order, _ = e.add_order(str(sym), float(price), qty, Side.BUY if side == 1 else Side.SELL)
                if op[0] == "ioc":
                    if order.leaves_qty:
                        e.cancel_order(order.order_id, str(sym))
                elif order.leaves_qty:
                    ids[(a, c)] = order
    return time.perf_counter() - t
