"""Real order flow through the server and the SDK: the LOBSTER AMZN day (the first
TE_LOBSTER_ROWS reference rows, default 3000; set it to 0 for the whole day), the
book equal to the published top 5 after every row, every execution filling its order."""
import asyncio
import csv
import gzip
import itertools
import os
from decimal import Decimal

import pytest

from clients import Client
from tests.server_proc import SECRETS
from tests.test_matching_lobster import BOOK, DISAGREE, MESSAGES, expected_top5

pytestmark = pytest.mark.skipif(not MESSAGES.exists(), reason=f"LOBSTER sample not found at {MESSAGES.parent}")

AMZN = """
[[symbols]]
id = 3
name = "AMZN"
price_decimals = 4
qty_decimals = 0
tick_size = 1
lot_size = 1
"""


def test_lobster_when_replayed_through_sdk_then_book_matches_published(server_factory):
    limit = int(os.environ.get("TE_LOBSTER_ROWS", "3000")) or None
    srv = server_factory(extra=AMZN, durability="async").start()
    with gzip.open(BOOK, "rt") as f:
        book = [row for row in itertools.islice(csv.reader(f), limit)]
    with open(DISAGREE) as f:
        disagree = {(int(r["ref_row"]), int(r["named_id"])) for r in csv.DictReader(f)}

    def px(units):
        return Decimal(units).scaleb(-4)

    async def go():
        async with Client.connect("127.0.0.1", srv.port, account=1, secret=SECRETS[1]) as maker, \
                Client.connect("127.0.0.1", srv.port, account=2, secret=SECRETS[2]) as taker:
            order_of, leaves = {}, {}
            rows = 0
            with gzip.open(MESSAGES, "rt") as f:
                for ref, group in itertools.groupby(csv.DictReader(f), key=lambda r: int(r["ref_row"])):
                    if limit is not None and ref >= limit:
                        break
                    for r in group:
                        typ, lid, size = int(r["type"]), int(r["order_id"]), int(r["size"])
                        price = px(int(r["price"]))
                        side = "buy" if r["direction"] == "1" else "sell"
                        if typ == 1:
                            ack = await maker.place("AMZN", side, size, price=price, stp="none")
                            assert ack.kind == "accepted", ack
                            order_of[lid], leaves[lid] = ack.order_id, size
                        elif typ in (2, 3) or (typ == 4 and (ref, lid) in disagree):
                            left = 0 if typ == 3 else leaves[lid] - size
                            if left <= 0:
                                rep = await maker.cancel(order_id=order_of[lid])
                            else:
                                rep = await maker.amend("AMZN", order_id=order_of[lid], qty=left)
                            assert rep.kind in ("cancelled", "replaced"), rep
                            leaves[lid] = max(left, 0)
                        elif typ == 4:
                            ack = await taker.place("AMZN", "sell" if side == "buy" else "buy", size, price=price,
                                                    tif="ioc", stp="none")
                            assert ack.kind == "accepted", ack
                            fill = None
                            async for rep in taker.reports():
                                if rep.order_id == ack.order_id and rep.kind == "fill":
                                    fill = rep
                                    break
                            assert (fill.price, fill.qty, fill.leaves) == (price, size, 0), fill
                            leaves[lid] -= size
                    b = await maker.book("AMZN", depth=5)
                    got = ([(int(x.price.scaleb(4)), int(x.qty)) for x in b.bids],
                           [(int(x.price.scaleb(4)), int(x.qty)) for x in b.asks])
                    assert got == expected_top5(book[ref]), f"book differs after ref_row {ref}"
                    rows += 1
            return rows

    rows = asyncio.run(go())
    assert rows == len(book)
