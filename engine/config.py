"""Configuration: TOML decoded by msgspec into typed structs. Unknown keys and bad
values stop start-up with a message naming the key. One source: these structs.

Secrets never come from the command line and are never logged: an account's
secret is read from an environment variable (`secret_env`) or a file readable
only by the service (`secret_file`); the embedded demo config uses `demo_secret`
(plain text, demo only: the server warns when it is used). The server keeps only
the signing key derived from it (`signing_key`), as the SDK does.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import stat
from importlib import resources
from pathlib import Path
from typing import Literal

import msgspec


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 7001                       # 0 = an ephemeral port (printed and written to port_file)
    port_file: str | None = None           # where to write the bound port (tests, tooling)
    cpu: int | None = None                 # pin the process to this CPU (sched_setaffinity)
    heartbeat_ms: int = 1000               # the default and the floor of a session's heartbeat interval
    heartbeat_timeout_factor: int = 3      # silent for factor x interval: disconnected
    logon_timeout_s: float = 5.0           # a connection must log on within this
    logon_skew_s: float = 30.0             # max |client timestamp - server time|
    max_pending_logons: int = 64           # connections not yet logged on
    lockout_failures: int = 5              # failed logons per account or address before lockout
    lockout_s: float = 60.0
    auth_failure_delay_s: float = 0.2      # every failed logon is answered after this
    output_buffer_bytes: int = 4 << 20     # unsent bytes per connection before SLOW_CONSUMER
    socket_send_buffer_bytes: int | None = None   # SO_SNDBUF per connection (None = kernel autotuning, up to
                                           # net.ipv4.tcp_wmem max: MBs of stale market data before conflation)
    orders_per_s: float = 20_000           # tier 1: new orders above it are THROTTLED
    orders_burst: float = 2_000
    logout_per_s: float = 100_000          # tier 2: all messages above it log the session out
    logout_burst: float = 20_000
    cancels_per_s: float = 50_000          # cancels have their own budget
    cancels_burst: float = 5_000
    replay_ring: int = 1 << 16             # execution reports kept per account for gap replay
    replay_index_every: int = 1 << 16      # commands between rows of the index into the journal for older gaps
    expire_interval_ms: int = 100          # how often the timer checks for due GTD orders
    ops_port: int | None = 7002            # HTTP /metrics and /health/* on host (0 = ephemeral, None = off)
    ops_port_file: str | None = None
    admin_host: str = "127.0.0.1"          # the admin listener: never the trading port
    admin_port: int | None = 7003          # 0 = ephemeral, None = off
    admin_port_file: str | None = None
    # market data (protocol/SPEC.md, "Market data")
    max_subscriptions: int = 256           # symbols one connection may subscribe to
    md_high_water_bytes: int = 64 << 10    # unsent output above which a connection's market data is conflated
    md_low_water_bytes: int = 16 << 10     # ... until it has drained below this
    recent_trades: int = 256               # trade prints kept per symbol (RECENT_TRADES_REQUEST, snapshots)
    # TLS: both paths, or neither (plain TCP)
    tls_cert: str | None = None            # PEM certificate chain
    tls_key: str | None = None             # PEM private key (readable by the service only)
    tls_handshakes_per_s: float = 100.0    # a handshake costs ~2.5 ms of the engine's loop: rate-limited
    tls_handshake_burst: float = 20.0


class EngineConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_orders: int = 1 << 20
    max_accounts: int = 1024
    max_symbols: int = 256
    max_levels: int = 4096


class SymbolConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: int
    name: str
    price_decimals: int = 2
    qty_decimals: int = 0
    tick_size: int = 1                     # in price units
    lot_size: int = 1                      # in qty units
    max_price: int = 1 << 62
    max_qty: int = 1 << 62


class AccountConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: int
    name: str
    stp_group: int = 0
    secret_env: str | None = None
    secret_file: str | None = None
    demo_secret: str | None = None


class AdminConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An operator of the admin listener. password_scrypt: "scrypt$N$r$p$salt_hex$hash_hex",
    made by `python -m engine.admin hash` (never the password itself)."""
    id: int
    name: str
    password_scrypt: str


class JournalConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    path: str = "./journal"
    durability: Literal["sync", "async", "none"] = "sync"
    map_size: int = 1 << 30
    sync_interval_ms: int = 100            # durability "async": env.sync(True) this often
    retry_interval_ms: int = 1000          # after a failed commit: how often the disk is probed to resume
    snapshot_every: int = 1_000_000        # commands between periodic snapshots (0 = only at shutdown)
    snapshots_keep: int = 3                # newest intact snapshots kept
    allow_none: bool = False               # durability "none" is for tests and benchmarks only


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    journal: JournalConfig = msgspec.field(default_factory=JournalConfig)
    symbols: list[SymbolConfig] = []
    accounts: list[AccountConfig] = []
    admins: list[AdminConfig] = []


class ConfigError(Exception):
    pass


def signing_key(secret: bytes) -> bytes:
    """The key logons are signed with; the server keeps this, never the secret."""
    return hmac.new(secret, b"trading-engine signing key", hashlib.sha256).digest()


def load(path: str | os.PathLike | None = None) -> Config:
    """The config at `path`, or the embedded default; ConfigError names what is wrong."""
    if path is None:
        text = resources.files("engine").joinpath("default_config.toml").read_bytes()
        where = "embedded default config"
    else:
        text = Path(path).read_bytes()
        where = str(path)
    try:
        cfg = msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{where}: {e}") from None
    except msgspec.DecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    validate(cfg, where)
    return cfg


def validate(cfg: Config, where: str) -> None:
    e = cfg.engine
    ids = [s.id for s in cfg.symbols]
    if len(set(ids)) != len(ids) or len({s.name for s in cfg.symbols}) != len(ids):
        raise ConfigError(f"{where}: `symbols`: ids and names must be unique")
    for s in cfg.symbols:
        if not 0 < s.id < e.max_symbols:
            raise ConfigError(f"{where}: `symbols.id` {s.id} outside 1..engine.max_symbols-1")
        if s.tick_size <= 0 or s.lot_size <= 0 or len(s.name.encode()) > 16:
            raise ConfigError(f"{where}: symbol {s.name}: tick_size/lot_size must be > 0, name <= 16 bytes")
    aids = [a.id for a in cfg.accounts]
    if len(set(aids)) != len(aids):
        raise ConfigError(f"{where}: `accounts.id` must be unique")
    for a in cfg.accounts:
        if not 0 < a.id < e.max_accounts:
            raise ConfigError(f"{where}: `accounts.id` {a.id} outside 1..engine.max_accounts-1")
        if sum(x is not None for x in (a.secret_env, a.secret_file, a.demo_secret)) != 1:
            raise ConfigError(f"{where}: account {a.name}: exactly one of secret_env, secret_file, demo_secret")
    if len({a.id for a in cfg.admins}) != len(cfg.admins) or len({a.name for a in cfg.admins}) != len(cfg.admins) \
            or any(a.id <= 0 for a in cfg.admins):
        raise ConfigError(f"{where}: `admins`: ids (> 0) and names must be unique")
    s = cfg.server
    if not 0 < s.md_low_water_bytes <= s.md_high_water_bytes < s.output_buffer_bytes:
        raise ConfigError(f"{where}: `server`: need 0 < md_low_water_bytes <= md_high_water_bytes < "
                          "output_buffer_bytes (market data must never make a slow consumer)")
    if s.recent_trades < 1 or s.max_subscriptions < 0:
        raise ConfigError(f"{where}: `server.recent_trades` must be >= 1 and max_subscriptions >= 0")
    if (s.tls_cert is None) != (s.tls_key is None):
        raise ConfigError(f"{where}: `server.tls_cert` and `server.tls_key` go together")
    if s.tls_handshakes_per_s <= 0 or s.tls_handshake_burst < 1:
        raise ConfigError(f"{where}: `server.tls_handshakes_per_s` must be > 0 and tls_handshake_burst >= 1")
    if cfg.journal.durability == "none" and not cfg.journal.allow_none:
        raise ConfigError(f"{where}: `journal.durability` = \"none\" loses acknowledged orders; "
                          "set journal.allow_none = true (tests and benchmarks only)")


def account_secret(a: AccountConfig) -> bytes:
    if a.secret_env is not None:
        value = os.environ.get(a.secret_env)
        if not value:
            raise ConfigError(f"account {a.name}: environment variable {a.secret_env} is not set")
        return value.encode()
    if a.secret_file is not None:
        p = Path(a.secret_file)
        if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"account {a.name}: {p} must be readable by its owner only (chmod 600)")
        return p.read_bytes().strip()
    return a.demo_secret.encode()
