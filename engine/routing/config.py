"""router.toml: msgspec structs, unknown keys are errors (as engine/config.py).

The sessions the router serves reuse the server's sections as they are: [server] (address,
heartbeats, lockouts, logon checks), [journal] (the router's own LMDB journal), [[symbols]]
(the router's symbol directory: each venue must list the symbol under the same name, tick,
lot and decimals, else that venue is not used for it) and [[accounts]] (the clients' accounts
and secrets). [router] and [[venues]] are the router's own.
"""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

import msgspec

from engine.config import (AccountConfig, ConfigError, JournalConfig, ServerConfig, SymbolConfig, account_secret,
                           read_secret)


class CcxtConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """[venues.ccxt]: an external exchange through ccxt (engine/routing/ccxt_venue.py, the `ccxt`
    extra; engine/ROUTING.md "Adapters"). Credentials from the environment or owner-only files only."""
    exchange: str                          # the ccxt exchange id ("binance", "kraken", ...)
    symbols: dict[str, str]                # router symbol name -> the exchange's market ("BTC-USD" = "BTC/USDT")
    api_key_env: str | None = None
    api_key_file: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    password_env: str | None = None        # the passphrase some exchanges add (ccxt `password`)
    password_file: str | None = None
    sandbox: bool = False                  # ccxt set_sandbox_mode: the exchange's testnet
    client_order_id_prefix: str = "te"     # a child's clientOrderId is prefix + its client order id
    reconcile_margin_s: float = 300.0      # trades and closed orders fetched from this long before the last
                                           # journaled report at a reconnect
    poll_s: float = 1.0                    # REST polling period where the exchange has no websocket for it
    options: dict[str, str] = {}           # ccxt exchange options (e.g. defaultType = "spot")


class VenueConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A venue the router trades on as a client: a trading-engine server (kind "trading-engine",
    through the SDK) or an external exchange (kind "ccxt", the optional extra; engine/ROUTING.md
    "Adapters")."""
    name: str
    kind: Literal["trading-engine", "ccxt"] = "trading-engine"
    host: str = "127.0.0.1"
    port: int | None = None
    port_file: str | None = None           # read the port from this file at each connect (tests, tooling)
    account: int | None = None             # the router's account at the venue (trading-engine)
    secret_env: str | None = None          # its secret: environment variable, owner-only file, or demo
    secret_file: str | None = None
    demo_secret: str | None = None
    taker_fee: Decimal = Decimal(0)        # fraction of notional the venue charges a taker ("0.0005" = 5 bps)
    maker_fee: Decimal = Decimal(0)        # ... a maker (negative = rebate); whole basis points
    tls: bool = False
    ccxt: CcxtConfig | None = None         # kind "ccxt": the exchange, its credentials and markets


class RouterSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    remainder: Literal["ioc", "post"] = "ioc"   # what happens to what the IOC waves leave (ROUTING.md)
    waves: int = 2                         # IOC waves per order: a wave's unfilled part is routed again once
    depth_levels: int = 10                 # levels per side subscribed at each venue
    reconnect_s: float = 0.5               # a venue that went down is tried again this often
    venue_silence_s: float = 3.5           # a venue session silent this long is dropped (venues send a
                                           # heartbeat every idle second: its heartbeat_ms, 1 s by default)
    degraded_p99_ms: float = 250.0         # a venue whose child acknowledgement p99 exceeds this is degraded
    degraded_reject_ratio: float = 0.2     # ... or whose children are rejected more often than this
    degraded_min_samples: int = 10         # ... judged once it has acknowledged at least this many children
    ops_host: str = "127.0.0.1"            # HTTP /metrics and /status (0 = ephemeral port, None = off)
    ops_port: int | None = 7012
    ops_port_file: str | None = None
    nice: int | None = None                # the router process's nice value at start (-20..19; below 0 needs
                                           # CAP_SYS_NICE or systemd LimitNICE=); with [server] cpu, its placement
                                           # (engine/ROUTING.md "Speed": a core of its own, or above co-located venues)


class RouterConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=lambda: ServerConfig(port=7011, ops_port=None,
                                                                                  admin_port=None))
    journal: JournalConfig = msgspec.field(default_factory=lambda: JournalConfig(path="./router-journal"))
    router: RouterSection = msgspec.field(default_factory=RouterSection)
    venues: list[VenueConfig] = []
    symbols: list[SymbolConfig] = []
    accounts: list[AccountConfig] = []


def fee_bps(where: str, value: Decimal) -> int:
    bps = value * 10_000
    if bps != bps.to_integral_value() or not -10_000 < bps < 10_000:
        raise ConfigError(f"{where}: a fee is a fraction in whole basis points within (-1, 1), not {value}")
    return int(bps)


def load(path: str) -> RouterConfig:
    where = str(path)
    try:
        cfg = msgspec.toml.decode(Path(path).read_bytes(), type=RouterConfig)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{where}: {e}") from None
    except msgspec.DecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{where}: {e.strerror or e}") from None
    if not cfg.venues or len({v.name for v in cfg.venues}) != len(cfg.venues) or len(cfg.venues) > 64:
        raise ConfigError(f"{where}: `venues`: 1 to 64 venues with unique names")
    names = {s.name for s in cfg.symbols}
    for v in cfg.venues:
        if v.kind == "ccxt":
            c = v.ccxt
            if c is None or v.port is not None or v.port_file is not None or v.account is not None or \
                    v.secret_env or v.secret_file or v.demo_secret:
                raise ConfigError(f"{where}: venue {v.name}: kind ccxt takes a [venues.ccxt] table (exchange, "
                                  "symbols, credentials), not port, account or secret")
            unknown = sorted(set(c.symbols) - names)
            if not c.symbols or unknown:
                raise ConfigError(f"{where}: venue {v.name}: `ccxt.symbols` maps [[symbols]] names to markets"
                                  + (f"; not in [[symbols]]: {unknown}" if unknown else ""))
            if c.reconcile_margin_s < 0 or c.poll_s <= 0 or not c.client_order_id_prefix.isalnum():
                raise ConfigError(f"{where}: venue {v.name}: ccxt reconcile_margin_s >= 0, poll_s > 0, "
                                  "client_order_id_prefix letters and digits")
        elif v.ccxt is not None or v.account is None or (v.port is None) == (v.port_file is None):
            raise ConfigError(f"{where}: venue {v.name}: account, and port or port_file, one of them "
                              "(a [venues.ccxt] table needs kind = \"ccxt\")")
        fee_bps(f"{where}: venue {v.name}", v.taker_fee)
        fee_bps(f"{where}: venue {v.name}", v.maker_fee)
    if len({s.id for s in cfg.symbols}) != len(cfg.symbols) or len({s.name for s in cfg.symbols}) != len(cfg.symbols):
        raise ConfigError(f"{where}: `symbols`: ids and names must be unique")
    if len({a.id for a in cfg.accounts}) != len(cfg.accounts):
        raise ConfigError(f"{where}: `accounts.id` must be unique")
    r = cfg.router
    if r.waves < 1 or not 1 <= r.depth_levels <= 50 or r.reconnect_s <= 0 or r.venue_silence_s <= 0:
        raise ConfigError(f"{where}: `router`: waves >= 1, depth_levels 1..50, reconnect_s and venue_silence_s > 0")
    if r.nice is not None and not -20 <= r.nice <= 19:
        raise ConfigError(f"{where}: `router.nice`: -20..19, not {r.nice}")
    if cfg.journal.durability == "none":
        raise ConfigError(f"{where}: `journal.durability`: the router needs its journal (sync or async)")
    return cfg


def venue_secret(v: VenueConfig) -> bytes:
    secret = read_secret(f"venue {v.name}", v.secret_env, v.secret_file)
    if secret is not None:
        return secret
    return account_secret(AccountConfig(id=v.account, name=v.name, demo_secret=v.demo_secret or ""))
