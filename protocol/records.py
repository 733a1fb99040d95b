"""The matching core's input and output records.

COMMAND is what the core consumes (the server builds one per decoded client
message, timers and admin actions build them too) and what the journal stores
as the inbound record; EVENT is what the core writes into its output buffer and
what the journal stores as the outbound record. See engine/RULES.md for what
each field means per command and event kind.
"""
from enum import IntEnum

from protocol.codes import LimitScope
from protocol.layout import Layout

COMMAND = Layout("Command", [
    ("kind", "u8", "CommandKind"),
    ("side", "u8", "Side (MASS_CANCEL: 0 = both sides)"),
    ("order_type", "u8", "OrderType"),
    ("tif", "u8", "TimeInForce"),
    ("stp", "u8", "SelfTradePrevention"),
    ("flags", "u8", "OrderFlag bits (POST_ONLY, REDUCE_ONLY)"),
    ("operator", "u16", "admin commands: the operator's id from [[admins]] (who did it); else 0"),
    ("symbol", "u32", "symbol id (MASS_CANCEL/END_OF_DAY: 0 = all)"),
    ("account", "u32", "account id, set by the server from the session (admin commands: the target account)"),
    ("seq", "u64", "engine-assigned command sequence number"),
    ("ts_ns", "u64", "receive time, ns since the epoch (journaled; the core copies it into the events, "
                     "never acts on it)"),
    ("client_order_id", "u64", "NEW_ORDER: new id; CANCEL/AMEND: target when order_id == 0"),
    ("order_id", "u64", "CANCEL/AMEND: target order id (0 = use client_order_id)"),
    ("price", "i64", "limit price in price units; AMEND: new price, 0 = unchanged"),
    ("qty", "i64", "quantity in qty units; AMEND: new remaining qty (0 cancels, -1 unchanged)"),
    ("stop_price", "i64", "STOP/STOP_LIMIT trigger price; AMEND: new stop, 0 = unchanged"),
    ("display_qty", "i64", "iceberg slice size (0 = fully displayed)"),
    ("expire_ts_ns", "i64", "GTD expiry; EXPIRE: now"),
    ("strategy", "u32", "strategy id (risk limits per strategy)"),
    ("session", "u32", "server session id that sent it (0 = engine/admin)"),
], doc="96-byte command record")

EVENT = Layout("Event", [
    ("kind", "u8", "EventKind"),
    ("side", "u8", "Side of order_id"),
    ("cmd_kind", "u8", "CommandKind of the command that caused it"),
    ("flags", "u8", "EventFlag bits (LIQUIDATION)"),
    ("reason", "u16", "Reject / CancelReason / SymbolState / AccountState, by kind"),
    ("_pad0", "u16", "zero"),
    ("symbol", "u32", "symbol id"),
    ("account", "u32", "account of order_id (the taker of a FILL)"),
    ("other_account", "u32", "FILL/STP_PREVENTED: the maker's account"),
    ("_pad1", "u32", "zero"),
    ("order_id", "u64", "the order (FILL: taker)"),
    ("client_order_id", "u64", "its client order id"),
    ("other_order_id", "u64", "FILL/STP_PREVENTED: the maker order id"),
    ("other_client_order_id", "u64", "FILL/STP_PREVENTED: the maker's client order id"),
    ("price", "i64", "ACCEPTED/REPLACED: limit price; FILL: trade price; TRIGGERED: stop price"),
    ("qty", "i64", "ACCEPTED: order qty; FILL: traded; CANCELLED: cancelled; RESTATED: shown; STP: would-trade"),
    ("leaves", "i64", "remaining qty of order_id after the event (hidden included)"),
    ("other_leaves", "i64", "FILL/STP_PREVENTED: remaining qty of the maker; REPLACED: leaves before"),
    ("trade_id", "u64", "FILL: engine trade id (1, 2, ...)"),
    ("seq", "u64", "seq of the command that caused it"),
    ("ts_ns", "u64", "ts_ns of the command that caused it (its journaled receive time; copied, never acted on)"),
    ("fee", "i64", "FILL: fee of order_id's account (the taker), cash units, negative = rebate; 0 without risk"),
    ("other_fee", "i64", "FILL: fee of the maker's account, cash units, negative = rebate; 0 without risk"),
], doc="128-byte event record")


# SET_LIMIT: the Command field that names the target of each LimitScope (DEFAULT has none).
SET_LIMIT_TARGET = {LimitScope.ACCOUNT: "account", LimitScope.SYMBOL: "symbol", LimitScope.STRATEGY: "strategy"}


def _python_tuple(layout, name):
    from collections import namedtuple
    return namedtuple(name, [f for f, _, _ in layout.fields if not f.startswith("_")])


# Python views of one record, for tests and tools (never on the hot path).
CommandTuple = _python_tuple(COMMAND, "CommandTuple")
EventTuple = _python_tuple(EVENT, "EventTuple")


# -- the router's journal (engine/routing, engine/ROUTING.md) --
# One journal record per router batch, like the engine's: the inputs the router took (each with
# its router sequence number) and the outputs it decided on. Bodies are the wire bodies as
# received or sent (protocol/wire.py layouts, zero padded to 96 bytes), so nothing is re-described.

class RouteInput(IntEnum):
    CLIENT_ORDER = 1       # a client's NEW_ORDER, CANCEL, AMEND or MASS_CANCEL (msg_type says which)
    VENUE_REPORT = 2       # an execution report a venue sent the router's venue account (msg_type: its type)
    CHILD_UNSENT = 3       # a child order found never to have reached its venue (body: the child's NEW_ORDER)
    VENUE_UP = 4           # a venue logged on and replayed (body: its next_client_order_id, u64)


class RouteOutput(IntEnum):
    PARENT = 1             # a parent order accepted (body: the client's NEW_ORDER; parent: its router order id)
    CLIENT_REPORT = 2      # an execution report to the client (body: the ExecReport, with its sequence number)
    CHILD_ORDER = 3        # an order to a venue (msg_type NEW_ORDER, CANCEL or AMEND; body as sent)


ROUTE_INPUT = Layout("RouteInput", [
    ("kind", "u8", "RouteInput"),
    ("msg_type", "u8", "MsgType of body"),
    ("venue", "u16", "venue index (1-based, [[venues]] order); 0 = a client's"),
    ("account", "u32", "client account (CLIENT_ORDER)"),
    ("seq", "u64", "router command sequence number"),
    ("ts_ns", "u64", "receive time, ns since the epoch"),
    ("body", "b96", "wire body as received, zero padded"),
], doc="120-byte router input record")

ROUTE_OUTPUT = Layout("RouteOutput", [
    ("kind", "u8", "RouteOutput"),
    ("msg_type", "u8", "MsgType of body"),
    ("venue", "u16", "CHILD_ORDER: venue index (1-based)"),
    ("account", "u32", "client account"),
    ("seq", "u64", "router sequence number of the input that caused it"),
    ("parent", "u64", "router order id of the parent order"),
    ("child", "u64", "CHILD_ORDER: the child's client order id at its venue"),
    ("body", "b96", "wire body as sent, zero padded"),
], doc="128-byte router output record")
