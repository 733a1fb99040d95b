"""Smart order routing (issue 16; engine/ROUTING.md): `trading-engine route --config router.toml`.

A process of its own that speaks the engine's wire protocol to clients and trades on several
venues as their client. It reads nothing of a venue's journal or engine: only what each venue
sends its session (depth snapshots, execution reports). It writes only its own journal
(router.toml [journal]: parent orders, child orders, the reports it sent; engine/journal.py
with the ROUTE_INPUT / ROUTE_OUTPUT records) and, to the venues, orders. After a restart it
replays that journal, then asks each venue for the reports after the last one journaled.

    config.py   router.toml
    book.py     the consolidated book and the split of an order across venues
    router.py   parents, children, decisions, the journal batch and recovery
    venues.py   the venue adapter interface and the trading-engine adapter (the SDK)
    ccxt_venue.py  the ccxt adapter: external exchanges (the optional `ccxt` extra)
    monitor.py  per-venue metrics, score and demotion
    codec.py    struct codecs of the frames sent and read per order
    server.py   client sessions, the ops listener, the command line
"""
