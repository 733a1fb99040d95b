"""Configuration: TOML decoded by msgspec into typed structs. Unknown keys and bad
values stop start-up with a message naming the key. One source: these structs.

Secrets never come from the command line and are never logged: an account's
secret is read from an environment variable (`secret_env`) or a file readable
only by the service (`secret_file`); the embedded demo config uses `demo_secret`
(plain text, demo only: the server warns when it is used). Every secret has at
least MIN_SECRET (16) bytes, or start-up stops with a one-line error. The server
keeps only the signing key derived from it (`signing_key`), as the SDK does.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import stat
from importlib import resources
from decimal import Decimal
from pathlib import Path
from typing import Literal

import msgspec

from protocol.codes import LimitKind, LimitScope
from protocol.units import from_units, to_units


# An account's secret keys the HMAC of its logons: anyone who records one LOGON can test guesses
# offline at full speed, so a secret must be long (16 bytes of a random alphabet is out of reach).
# The same minimum as accounts added at run time (engine/admin.py).
MIN_SECRET = 16


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
    max_pending_logons_per_address: int = 8   # ... from one source address; when all max_pending_logons are
                                           # taken, the address holding most gives up its oldest to another
    logon_timeout_busy_s: float = 1.0      # logon_timeout_s while half the pending-logon slots are taken
    lockout_failures: int = 5              # failed logons per (account, address) before that pair is locked out
    address_lockout_failures: int = 25     # ... per address, all accounts: that address is locked out
    account_lockout_failures: int = 100    # ... per account, all addresses: the whole account is locked out
    lockout_s: float = 60.0                # failures count within this window; a lockout lasts this long
    auth_failure_entries: int = 10_000     # failure records kept per listener (engine/auth.py), oldest dropped
    refused_logon_logs_per_s: float = 10.0  # refused logons / admin authentications logged (the rest counted)
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
    ops_host: str = "127.0.0.1"            # the ops listener's address: loopback unless set (never follows host)
    ops_port: int | None = 7002            # HTTP /metrics and /health/* on ops_host (0 = ephemeral, None = off)
    ops_port_file: str | None = None
    ops_token_env: str | None = None       # bearer token for per-account figures on the ops listener
    ops_token_file: str | None = None      # (one of the two, >= 16 bytes; without one they are never served)
    admin_host: str = "127.0.0.1"          # the admin listener: never the trading port
    admin_port: int | None = 7003          # 0 = ephemeral, None = off
    admin_port_file: str | None = None
    admin_lockout_failures: int = 5        # failed admin authentications per address before it is locked out
    admin_operator_lockout_failures: int = 20   # ... per operator name (known or not), from all addresses
    admin_password_checks: int = 1         # scrypt checks run at once (1 or 2), off the engine's CPU
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
    """Capacities (engine/CAPACITY.md: what each costs in memory and what a full one rejects)."""
    max_orders: int = 1 << 20
    max_accounts: int = 1024
    max_symbols: int = 256
    max_levels: int = 4096                 # price levels per ladder (a symbol has 4: bids, asks, stops)
    max_level_slots: int = 0               # price levels of all ladders together; 0 = never below max_orders


class RiskLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Risk limits of one scope (engine/RISK.md "Limits"), in the units people use: money in the
    quote currency (strings or integers, e.g. "50000" or "0.50"), ratios as fractions ("0.10" is
    10%), leverage as a multiple ("10"), quantities in the symbol's units, times in ms. A limit
    left out is not set at this scope. Each converts exactly to the engine's integer units or
    start-up stops, naming it."""
    max_order_qty: Decimal | None = None          # symbol scope only (its qty units)
    max_order_value: Decimal | None = None
    max_position_value: Decimal | None = None
    max_open_orders: int | None = None
    max_leverage: Decimal | None = None
    max_daily_loss: Decimal | None = None
    price_collar: Decimal | None = None
    market_band: Decimal | None = None
    max_var: Decimal | None = None                # pre-trade VaR limit (RISK.md), from the risk worker's model
    initial_margin: Decimal | None = None
    maintenance_margin: Decimal | None = None
    maker_fee: Decimal | None = None              # negative = rebate; whole basis points
    taker_fee: Decimal | None = None
    breaker_band: Decimal | None = None           # default / symbol scope
    breaker_window_ms: int | None = None
    breaker_cooloff_ms: int | None = None         # 0 = resume only by admin
    external_mark: bool | None = None             # default / symbol: marks only from MARK_PRICE
    error_threshold: int | None = None            # default scope: rejects/s that trip the engine breaker
    error_accounts: int | None = None             # default scope: ... from at least this many accounts
    account_reject_limit: int | None = None       # default / account: rejects/s an account may cause
    account_lockout_ms: int | None = None         # default / account: then refused this long (0 = until reset)
    large_order_qty: Decimal | None = None        # symbol scope only: an order above it is large (RISK.md "KYC")
    large_position_qty: Decimal | None = None     # symbol scope only: a position above it is large
    large_reject: bool | None = None              # true: large orders/positions rejected pre-trade; false
                                                  # (default): flagged post-trade by `trading-engine surveil`


def _prototype_defaults() -> RiskLimits:
    """The prototype's riskLimits (maxPositionValue, maxDailyLoss, maxLeverage, maxOrderValue,
    maxVaR, marginRequirement, maintenanceMargin)."""
    return RiskLimits(max_position_value=Decimal("1000000"), max_daily_loss=Decimal("100000"),
                      max_leverage=Decimal("10"), max_order_value=Decimal("50000"), max_var=Decimal("50000"),
                      initial_margin=Decimal("0.10"), maintenance_margin=Decimal("0.05"))


class StrategyLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: int
    limits: RiskLimits


class RiskConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    cash_decimals: int = 2                 # cash units: 10**-cash_decimals of the quote currency
    max_strategies: int = 256              # orders carry strategy ids 0 .. max_strategies-1
    max_positions: int = 0                 # (account, symbol) position entries at most, made on demand; 0 =
                                           # max_accounts x max_symbols up to 2**20 (engine/CAPACITY.md)
    mark_interval_ms: int = 100            # how often marks may follow last trades (a journaled RISK_TICK)
    defaults: RiskLimits = msgspec.field(default_factory=_prototype_defaults)
    kyc_default: Literal["pending", "verified", "blocked"] = "verified"   # KYC state of accounts without their
                                                                          # own (admin `kyc`; RISK.md "KYC")
    strategies: list[StrategyLimits] = []


class SymbolConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: int
    name: str
    price_decimals: int = 2
    qty_decimals: int = 0
    tick_size: int = 1                     # in price units
    lot_size: int = 1                      # in qty units
    max_price: int = 1 << 62
    max_qty: int = 1 << 62
    multiplier: int = 1                    # risk: contract multiplier (notional = price x qty x multiplier)
    reference_price: Decimal | None = None  # risk: the first mark (a symbol without a mark takes no orders)
    limits: RiskLimits | None = None


class AccountConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: int
    name: str
    stp_group: int = 0
    secret_env: str | None = None
    secret_file: str | None = None
    demo_secret: str | None = None
    initial_deposit: Decimal | None = None  # risk: cash deposited (journaled) on the first start only
    limits: RiskLimits | None = None


class AdminConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An operator of the admin listener. password_scrypt: "scrypt$N$r$p$salt_hex$hash_hex",
    made by `trading-engine admin hash` (never the password itself). Or password_env: the
    environment variable holding the password (the server hashes it at start-up and keeps only
    the hash), with demo_password as the fallback when the variable is unset (demo only: the
    server warns when it is used)."""
    id: int
    name: str
    password_scrypt: str | None = None
    password_env: str | None = None
    demo_password: str | None = None


class JournalConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    path: str = "./journal"
    # replicated: sync, and every batch acknowledged only after the JetStream publish ack too
    # ([replication]; engine/SCALING.md)
    durability: Literal["sync", "async", "none", "replicated"] = "sync"
    map_size: int = 1 << 30
    sync_interval_ms: int = 100            # durability "async": env.sync(True) this often
    retry_interval_ms: int = 1000          # after a failed commit: how often the disk is probed to resume
    snapshot_every: int = 1_000_000        # commands between periodic snapshots (0 = only at shutdown)
    snapshots_keep: int = 3                # newest intact snapshots kept
    snapshot_min_free_bytes: int = 64 << 20  # free space a snapshot must leave (the journal's room), else skipped
    allow_none: bool = False               # durability "none" is for tests and benchmarks only
    key_env: str | None = None             # the journal chain's key (>= 16 bytes; engine/journal.py) from this
    key_file: str | None = None            # environment variable or owner-only file; fixed at journal creation


class ReplicationConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Journal shipping to NATS JetStream, the leader lease and the hot standby (engine/SCALING.md)."""
    servers: list[str] = []                # NATS URLs; empty: no replication
    node: str = ""                         # this node's name in the lease (default: the host name)
    address: str = ""                      # host:port clients reach this node at, shown in the lease
    stream: str = "TE_JOURNAL"             # the stream of committed batches
    subject: str = "te.journal"
    replicas: int = 3                      # the stream's and the lease bucket's replicas
    lease_bucket: str = "te_leader"        # JetStream key-value bucket holding the leader lease
    lease_ms: int = 1000                   # the lease lapses this long after its last renewal
    publish_timeout_ms: int = 1000         # a publish not acknowledged by then fails (fences, if replicated)
    state_hash_every: int = 1000           # batches between state hashes shipped for the standby to check


class ShardsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Symbol shards (engine/SCALING.md "Symbol shards"): which shard of a shard directory this server is.
    It takes orders for that shard's symbols only (others: WRONG_SHARD); every shard keeps the one symbol
    table of the config, so symbol ids mean the same everywhere."""
    name: str = ""                         # this server's shard in the directory ("" = not sharded)
    directory: str = ""                    # the shard directory file (TOML, ShardDirectory; relative to this config)


class ShardEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    address: str                           # host:port of its trading port (the SDK's)
    admin: str = ""                        # host:port of its admin listener (the coordinator's)
    symbols: list[str]                     # the symbols it owns, by name (each symbol in one shard exactly)


class CoordinatorConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`trading-engine shards coordinate` (engine/shards.py): moves each account's cash between shards."""
    interval_ms: int = 1000                # one cycle (read every shard, transfer where due) this often
    threshold: Decimal = Decimal("0.5")    # an account is rebalanced when a shard's available is below this
                                           # fraction of its mean available over the shards (0..1)
    accounts: list[int] = []               # accounts it rebalances (empty: every account the shards report)


class ShardDirectory(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The shard directory, one file shared by the servers, the SDK (clients.ShardedClient) and the
    coordinator: which shard owns which symbols, and where it listens."""
    shards: list[ShardEntry]
    coordinator: CoordinatorConfig = msgspec.field(default_factory=CoordinatorConfig)


def load_directory(path: str | os.PathLike) -> ShardDirectory:
    """The shard directory at `path`; ConfigError names what is wrong (names unique, a symbol in one
    shard at most, addresses host:port)."""
    try:
        d = msgspec.toml.decode(Path(path).read_bytes(), type=ShardDirectory)
    except OSError as e:
        raise ConfigError(f"shard directory {path}: {e.strerror or e}") from None
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise ConfigError(f"shard directory {path}: {e}") from None
    names = [s.name for s in d.shards]
    owned = [sym for s in d.shards for sym in s.symbols]
    if not names or len(set(names)) != len(names) or any(not n for n in names):
        raise ConfigError(f"shard directory {path}: at least one shard; names non-empty and unique")
    if len(set(owned)) != len(owned):
        raise ConfigError(f"shard directory {path}: a symbol is owned by one shard only")
    for s in d.shards:
        for what, addr in (("address", s.address), ("admin", s.admin)):
            host, _, port = addr.rpartition(":")
            if (addr or what == "address") and not (host and port.isdigit() and 0 < int(port) < 65536):
                raise ConfigError(f"shard directory {path}: shard {s.name}: `{what}` must be host:port")
    c = d.coordinator
    if c.interval_ms < 1 or not 0 < c.threshold <= 1:
        raise ConfigError(f"shard directory {path}: `coordinator`: interval_ms >= 1, threshold in (0, 1]")
    return d


def shard_address(addr: str) -> tuple[str, int]:
    """A directory's "host:port" as (host, port)."""
    host, _, port = addr.rpartition(":")
    return host, int(port)


def foreign_symbols(cfg: Config) -> list[int]:
    """The ids of the config's symbols this server's shard does not own (empty when not sharded)."""
    if not cfg.shards.name:
        return []
    d = load_directory(cfg.shards.directory)
    mine = next(s for s in d.shards if s.name == cfg.shards.name)
    return [s.id for s in cfg.symbols if s.name not in mine.symbols]


def shard_number(cfg: Config) -> tuple[int, int]:
    """(this shard's position in the directory, the number of shards); (0, 1) when not sharded."""
    if not cfg.shards.name:
        return 0, 1
    d = load_directory(cfg.shards.directory)
    return [s.name for s in d.shards].index(cfg.shards.name), len(d.shards)


class ScenarioConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A named stress scenario (engine/RISK.md "Analytics"): relative price moves by symbol name or
    [analytics.groups] name ("-0.30" is -30%; a symbol's own shock wins over its group's), and a
    volatility multiplier for the stressed VaR (parametric, correlations kept)."""
    name: str
    shocks: dict[str, float] = {}
    vol_multiplier: float = 1.0


class AnalyticsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The risk analytics (`trading-engine risk`, engine/analytics.py): off the engine, read-only."""
    confidence: float = 0.95               # the seed's VAR_CONFIDENCE_LEVEL
    horizon_days: float = 1.0              # VaR horizon: sqrt(horizon_days x 86400 / period_s) x one period's
    period_s: float = 86400.0              # one return = the change of a symbol's close over this much journal time
    ewma_lambda: float = 0.94              # RiskMetrics decay of the EWMA covariance
    hist_window: int = 250                 # historical simulation: the last this many returns
    mc_paths: int = 10_000
    mc_seed: int = 0
    mc_student_t_df: float | None = None   # Monte Carlo: Student-t with these degrees of freedom (> 2), else normal
    worker_interval_ms: int = 1000         # `trading-engine risk worker`: one cycle (read, recompute, send) this often
    metrics_file: str = ""                 # the worker's figures for the queries (riskqueries.py); "" = in journal.path
    groups: dict[str, list[str]] = {}      # symbol groups for the scenarios' group shocks ("crypto" = [...])
    scenarios: list[ScenarioConfig] = []


class SurveillanceOwner(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    accounts: list[int]                    # accounts of one beneficial owner (an unlisted account owns itself)


class WashConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    window_ms: int = 1000                  # opposite orders of one owner at one price within this
    episode_gap_ms: int = 10_000           # another finding of the same owner and symbol within this: same episode


class SpoofConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    min_qty: int = 100                     # "large": an order of at least this many qty units
    min_away: int = 1                      # price units behind its side's best price when placed
    max_lifetime_ms: int = 5000            # placed and cancelled within this
    max_filled_pct: int = 10               # at most this % of it filled
    episode_gap_ms: int = 10_000


class MessagingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    window_ms: int = 1000                  # the sliding window of the counts
    max_messages: int = 500                # order-entry messages of one account in a window above this: alert
    max_order_to_trade: int = 50           # ... or messages per trade above this, once at least
    min_messages: int = 100                # this many messages are in the window


class LayeringConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    min_orders: int = 3                    # orders of one owner on one side ...
    min_levels: int = 3                    # ... at at least this many prices ...
    min_qty: int = 1                       # ... of at least this much qty in all
    window_ms: int = 2000                  # placed at most this long before the owner's execution on the other side
    cancel_ms: int = 1000                  # and cancelled at most this long after it
    max_filled_pct: int = 10               # each at most this % filled
    episode_gap_ms: int = 10_000


class MomentumConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    window_ms: int = 1000                  # aggressive trades of one owner on one side within this ...
    min_trades: int = 3                    # ... at least this many ...
    min_qty: int = 1                       # ... of at least this much qty ...
    min_move_bps: int = 20                 # ... moving the price this far in their direction ...
    reversal_ms: int = 10_000              # ... then a trade of the owner on the other side within this
    episode_gap_ms: int = 60_000


class CloseConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    close_time: str | None = None          # "HH:MM:SS" (UTC, journaled time): the close, besides END_OF_DAY
    window_ms: int = 60_000                # the closing window: trades in the last this long before the close
    min_share_pct: int = 30                # one owner's aggressive volume on one side: at least this % of it
    min_move_bps: int = 10                 # the closing price moved this far in that side's direction
    min_trades: int = 2                    # the owner's aggressive trades in the window, at least


class LargeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True                   # flag orders/positions above LARGE_ORDER_QTY / LARGE_POSITION_QTY


class SurveillanceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`trading-engine surveil` (engine/surveillance.py, engine/SURVEILLANCE.md); quantities and
    prices in the journal's integer units, times in ms of journaled receive time."""
    owners: list[SurveillanceOwner] = []
    wash: WashConfig = msgspec.field(default_factory=WashConfig)
    spoofing: SpoofConfig = msgspec.field(default_factory=SpoofConfig)
    messaging: MessagingConfig = msgspec.field(default_factory=MessagingConfig)
    layering: LayeringConfig = msgspec.field(default_factory=LayeringConfig)
    momentum: MomentumConfig = msgspec.field(default_factory=MomentumConfig)
    close: CloseConfig = msgspec.field(default_factory=CloseConfig)
    large: LargeConfig = msgspec.field(default_factory=LargeConfig)
    poll_ms: int = 100                     # --follow: how often the journal is read for new records
    state_commit_ms: int = 2000            # the detectors' State stored at most this often (the alerts
                                           # and how far they reach every cycle; a restart replays the rest)


class AlgosConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Execution algorithms (engine/ALGOS.md). Replaying a journal needs the same values (they shape
    the schedules), as it needs the same symbols."""
    enabled: bool = True
    max_parents: int = 1024                # live parent orders, all accounts
    max_slices: int = 256                  # schedule entries per parent
    default_slices: int = 10               # ALGO_NEW slices = 0
    clock_ms: int = 100                    # the journaled ALGO_CLOCK, while any parent is live
    max_duration_ms: int = 7 * 86_400_000  # longest window accepted
    seed: int = 0                          # of the parents' randomization (with each parent's id)
    volume_bucket_ms: int = 60_000         # traded volume per bucket: the VWAP profile without vwap_profile
    vwap_profile: list[int] = []           # VWAP weights over a parent's window (resampled onto its slices)


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    journal: JournalConfig = msgspec.field(default_factory=JournalConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    symbols: list[SymbolConfig] = []
    accounts: list[AccountConfig] = []
    admins: list[AdminConfig] = []
    analytics: AnalyticsConfig = msgspec.field(default_factory=AnalyticsConfig)
    surveillance: SurveillanceConfig = msgspec.field(default_factory=SurveillanceConfig)
    replication: ReplicationConfig = msgspec.field(default_factory=ReplicationConfig)
    algos: AlgosConfig = msgspec.field(default_factory=AlgosConfig)
    shards: ShardsConfig = msgspec.field(default_factory=ShardsConfig)


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
    if path is not None and cfg.shards.directory:     # relative to the config file, wherever it is read from
        cfg.shards.directory = str(Path(path).parent / cfg.shards.directory)
    validate(cfg, where)
    return cfg


def validate(cfg: Config, where: str) -> None:
    e = cfg.engine
    if not (0 < e.max_orders < 1 << 30 and 2 <= e.max_accounts and 2 <= e.max_symbols and 0 < e.max_levels < 1 << 30
            and 0 <= e.max_level_slots < 1 << 31):
        raise ConfigError(f"{where}: `engine`: max_orders and max_levels 1..2**30-1, max_accounts and max_symbols "
                          f">= 2, max_level_slots 0..2**31-1")
    if not 0 <= cfg.risk.max_positions < 1 << 30:
        raise ConfigError(f"{where}: `risk.max_positions` 0..2**30-1 (0: max_accounts x max_symbols, at most 2**20)")
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
            or any(not 0 < a.id < 1 << 16 for a in cfg.admins):
        raise ConfigError(f"{where}: `admins`: ids (1..65535: Command.operator) and names must be unique")
    for a in cfg.admins:
        if (a.password_scrypt is None) == (a.password_env is None) or \
                (a.demo_password is not None and a.password_env is None):
            raise ConfigError(f"{where}: admin {a.name}: exactly one of password_scrypt, password_env "
                              "(demo_password only as password_env's fallback)")
    g = cfg.algos
    if g.max_parents < 1 or not 1 <= g.default_slices <= g.max_slices <= 4096 or g.clock_ms < 1 or \
            g.max_duration_ms < 1 or g.volume_bucket_ms < 1 or not 0 <= g.seed < 1 << 64 or \
            any(w < 0 for w in g.vwap_profile):
        raise ConfigError(f"{where}: `algos`: max_parents, clock_ms, max_duration_ms, volume_bucket_ms > 0; "
                          "1 <= default_slices <= max_slices <= 4096; seed a u64; vwap_profile weights >= 0")
    if cfg.risk.enabled:
        risk_limits(cfg, where)          # every limit converts, and sits in a scope that takes it
        for s in cfg.symbols:
            if s.multiplier <= 0:
                raise ConfigError(f"{where}: symbol {s.name}: `multiplier` must be > 0")
            if s.reference_price is not None:
                _convert(where, f"symbols.{s.name}.reference_price", s.reference_price, s.price_decimals,
                         s.tick_size)
    s = cfg.server
    if not 0 < s.md_low_water_bytes <= s.md_high_water_bytes < s.output_buffer_bytes:
        raise ConfigError(f"{where}: `server`: need 0 < md_low_water_bytes <= md_high_water_bytes < "
                          "output_buffer_bytes (market data must never make a slow consumer)")
    if s.max_pending_logons_per_address < 1 or not 0 < s.logon_timeout_busy_s <= s.logon_timeout_s:
        raise ConfigError(f"{where}: `server`: need max_pending_logons_per_address >= 1 and "
                          "0 < logon_timeout_busy_s <= logon_timeout_s")
    if s.recent_trades < 1 or s.max_subscriptions < 0:
        raise ConfigError(f"{where}: `server.recent_trades` must be >= 1 and max_subscriptions >= 0")
    if (s.tls_cert is None) != (s.tls_key is None):
        raise ConfigError(f"{where}: `server.tls_cert` and `server.tls_key` go together")
    if s.tls_handshakes_per_s <= 0 or s.tls_handshake_burst < 1:
        raise ConfigError(f"{where}: `server.tls_handshakes_per_s` must be > 0 and tls_handshake_burst >= 1")
    if min(s.lockout_failures, s.address_lockout_failures, s.account_lockout_failures, s.admin_lockout_failures,
           s.admin_operator_lockout_failures) < 1 or s.lockout_s <= 0 or s.auth_failure_entries < 3 \
            or s.refused_logon_logs_per_s <= 0:
        raise ConfigError(f"{where}: `server`: lockout thresholds must be >= 1, lockout_s and "
                          "refused_logon_logs_per_s > 0, auth_failure_entries >= 3")
    if s.admin_password_checks not in (1, 2):
        raise ConfigError(f"{where}: `server.admin_password_checks` must be 1 or 2 (each check is ~130 ms of a CPU)")
    if cfg.journal.key_env is not None and cfg.journal.key_file is not None:
        raise ConfigError(f"{where}: `journal`: key_env or key_file, not both")
    validate_analytics(cfg, where)
    if cfg.journal.durability == "none" and not cfg.journal.allow_none:
        raise ConfigError(f"{where}: `journal.durability` = \"none\" loses acknowledged orders; "
                          "set journal.allow_none = true (tests and benchmarks only)")
    r = cfg.replication
    if cfg.journal.durability == "replicated" and not r.servers:
        raise ConfigError(f"{where}: `journal.durability` = \"replicated\" needs `replication.servers`")
    if r.servers and cfg.journal.durability == "none":
        raise ConfigError(f"{where}: replication ships the journal: `journal.durability` \"none\" has none")
    if r.lease_ms < 100 or r.publish_timeout_ms < 1 or r.replicas < 1 or r.state_hash_every < 0:
        raise ConfigError(f"{where}: `replication`: lease_ms >= 100, publish_timeout_ms and replicas >= 1, "
                          "state_hash_every >= 0")
    validate_shards(cfg, where)
    sv = cfg.surveillance
    owned = [a for o in sv.owners for a in o.accounts]
    if len(set(owned)) != len(owned) or len({o.name for o in sv.owners}) != len(sv.owners):
        raise ConfigError(f"{where}: `surveillance.owners`: names unique, an account in one owner at most")
    if min(sv.wash.window_ms, sv.spoofing.max_lifetime_ms, sv.messaging.window_ms, sv.poll_ms,
           sv.layering.window_ms, sv.layering.cancel_ms, sv.momentum.window_ms, sv.momentum.reversal_ms,
           sv.close.window_ms, sv.state_commit_ms) <= 0 \
            or min(sv.spoofing.min_qty, sv.messaging.max_messages, sv.messaging.max_order_to_trade,
                   sv.layering.min_orders, sv.layering.min_levels, sv.momentum.min_trades, sv.momentum.min_move_bps,
                   sv.close.min_share_pct, sv.close.min_trades) < 1:
        raise ConfigError(f"{where}: `surveillance`: windows, poll_ms, state_commit_ms and thresholds must be > 0")
    if sv.close.close_time is not None:
        try:
            h, m, s = (int(x) for x in sv.close.close_time.split(":"))
            assert 0 <= h < 24 and 0 <= m < 60 and 0 <= s < 60
        except (ValueError, AssertionError):
            raise ConfigError(f"{where}: `surveillance.close.close_time`: \"HH:MM:SS\"") from None


def validate_shards(cfg: Config, where: str) -> None:
    """[shards]: this shard is in the directory, which names config symbols only and owns each of them once."""
    sh = cfg.shards
    if not sh.name and not sh.directory:
        return
    if not sh.name or not sh.directory:
        raise ConfigError(f"{where}: `shards`: name and directory go together")
    d = load_directory(sh.directory)
    if sh.name not in [s.name for s in d.shards]:
        raise ConfigError(f"{where}: `shards.name` {sh.name!r} is not in {sh.directory}")
    names = {s.name for s in cfg.symbols}
    owned = {sym for s in d.shards for sym in s.symbols}
    if owned != names:
        raise ConfigError(f"{where}: shard directory {sh.directory}: every symbol of the config in one shard, "
                          f"no other (unowned: {', '.join(sorted(names - owned)) or '-'}; unknown: "
                          f"{', '.join(sorted(owned - names)) or '-'})")


def validate_analytics(cfg: Config, where: str) -> None:
    a = cfg.analytics
    if not 0.5 < a.confidence < 1 or a.horizon_days <= 0 or a.period_s <= 0 or not 0 < a.ewma_lambda < 1:
        raise ConfigError(f"{where}: `analytics`: confidence in (0.5, 1), horizon_days and period_s > 0, "
                          "ewma_lambda in (0, 1)")
    if a.hist_window < 2 or a.mc_paths < 100 or (a.mc_student_t_df is not None and a.mc_student_t_df <= 2):
        raise ConfigError(f"{where}: `analytics`: hist_window >= 2, mc_paths >= 100, mc_student_t_df > 2")
    names = {s.name for s in cfg.symbols}
    for g, members in a.groups.items():
        if g in names or set(members) - names:
            raise ConfigError(f"{where}: `analytics.groups.{g}`: a group's name is no symbol's and its members "
                              f"are symbol names (unknown: {', '.join(sorted(set(members) - names)) or g})")
    if len({sc.name for sc in a.scenarios}) != len(a.scenarios):
        raise ConfigError(f"{where}: `analytics.scenarios`: names must be unique")
    for sc in a.scenarios:
        bad = [k for k in sc.shocks if k not in names and k not in a.groups]
        if bad or sc.vol_multiplier <= 0 or any(v <= -1 for v in sc.shocks.values()):
            raise ConfigError(f"{where}: scenario {sc.name!r}: shocks name symbols or analytics.groups (unknown: "
                              f"{', '.join(bad) or '-'}), each > -1; vol_multiplier > 0")
        groups = [g for g in sc.shocks if g in a.groups]
        for i, g in enumerate(groups):
            twice = set(a.groups[g]) & {m for h in groups[i + 1:] for m in a.groups[h]} - set(sc.shocks)
            if twice:
                raise ConfigError(f"{where}: scenario {sc.name!r}: {', '.join(sorted(twice))} in two shocked "
                                  "groups; shock the symbol itself")


def read_secret(what: str, env: str | None, file: str | None) -> bytes | None:
    """A secret from an environment variable or an owner-only file (surrounding whitespace
    stripped), at least MIN_SECRET bytes: an account's secret, the ops token, the journal key.
    None when neither is configured; a ConfigError in one line when it is wrong."""
    if env is not None and file is not None:
        raise ConfigError(f"{what}: from an environment variable or a file, not both")
    if env is not None:
        value = os.environ.get(env, "").strip().encode()
        if not value:
            raise ConfigError(f"{what}: environment variable {env} is not set")
        where = f"environment variable {env}"
    elif file is not None:
        p = Path(file)
        try:
            if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(f"{what}: {p} must be readable by its owner only (chmod 600)")
            value = p.read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"{what}: {p}: {e.strerror or e}") from None
        where = str(p)
    else:
        return None
    if len(value) < MIN_SECRET:
        raise ConfigError(f"{what}: the secret in {where} has {len(value)} bytes, at least {MIN_SECRET} needed")
    return value


def ops_token(s: ServerConfig) -> bytes | None:
    """The ops listener's bearer token (ops_token_env or ops_token_file), or None if neither is set."""
    return read_secret("`server` ops token", s.ops_token_env, s.ops_token_file)


def account_secret(a: AccountConfig) -> bytes:
    """The account's secret, from whichever source (secret_env, secret_file, else demo_secret)."""
    secret = read_secret(f"account {a.name}", a.secret_env, a.secret_file)
    if secret is not None:
        return secret
    demo = (a.demo_secret or "").encode()
    if len(demo) < MIN_SECRET:
        raise ConfigError(f"account {a.name}: demo_secret has {len(demo)} bytes, at least {MIN_SECRET} needed")
    return demo


def journal_key(j: JournalConfig) -> bytes | None:
    """The journal chain's key ([journal] key_env or key_file), None when unkeyed."""
    return read_secret("journal key", j.key_env, j.key_file)


def admin_password(a: AdminConfig) -> tuple[str, bool] | None:
    """(password, is the demo default) of an operator configured by password_env; None for a
    password_scrypt operator. ConfigError when the variable is unset and there is no demo default."""
    if a.password_env is None:
        return None
    value = os.environ.get(a.password_env)
    if value:
        return value, False
    if a.demo_password is None:
        raise ConfigError(f"admin {a.name}: environment variable {a.password_env} is not set")
    return a.demo_password, True


# RiskLimits field -> (LimitKind, how its value converts)
_LIMIT_FIELDS = {
    "max_order_qty": (LimitKind.MAX_ORDER_QTY, "qty"), "max_order_value": (LimitKind.MAX_ORDER_VALUE, "cash"),
    "max_position_value": (LimitKind.MAX_POSITION_VALUE, "cash"), "max_open_orders": (LimitKind.MAX_OPEN_ORDERS, "int"),
    "max_leverage": (LimitKind.MAX_LEVERAGE, "bps"), "max_daily_loss": (LimitKind.MAX_DAILY_LOSS, "cash"),
    "price_collar": (LimitKind.PRICE_COLLAR, "bps"), "market_band": (LimitKind.MARKET_BAND, "bps"),
    "max_var": (LimitKind.MAX_VAR, "cash"), "initial_margin": (LimitKind.INITIAL_MARGIN, "bps"),
    "maintenance_margin": (LimitKind.MAINTENANCE_MARGIN, "bps"), "maker_fee": (LimitKind.MAKER_FEE, "bps"),
    "taker_fee": (LimitKind.TAKER_FEE, "bps"), "breaker_band": (LimitKind.BREAKER_BAND, "bps"),
    "breaker_window_ms": (LimitKind.BREAKER_WINDOW_MS, "int"),
    "breaker_cooloff_ms": (LimitKind.BREAKER_COOLOFF_MS, "int"),
    "external_mark": (LimitKind.EXTERNAL_MARK, "int"), "error_threshold": (LimitKind.ERROR_THRESHOLD, "int"),
    "error_accounts": (LimitKind.ERROR_ACCOUNTS, "int"),
    "account_reject_limit": (LimitKind.ACCOUNT_REJECT_LIMIT, "int"),
    "account_lockout_ms": (LimitKind.ACCOUNT_LOCKOUT_MS, "int"),
    "large_order_qty": (LimitKind.LARGE_ORDER_QTY, "qty"),
    "large_position_qty": (LimitKind.LARGE_POSITION_QTY, "qty"),
    "large_reject": (LimitKind.LARGE_REJECT, "int"),
}
_SYMBOL_ONLY = {"max_order_qty", "large_order_qty", "large_position_qty"}
_SCOPE_FIELDS = {  # what each scope may set (engine/RISK.md "Limits")
    LimitScope.DEFAULT: set(_LIMIT_FIELDS) - _SYMBOL_ONLY,
    LimitScope.ACCOUNT: set(_LIMIT_FIELDS) - _SYMBOL_ONLY - {"breaker_band", "breaker_window_ms",
                                             "breaker_cooloff_ms", "external_mark", "error_threshold",
                                             "error_accounts"},
    LimitScope.SYMBOL: set(_LIMIT_FIELDS) - {"error_threshold", "error_accounts", "account_reject_limit",
                                            "account_lockout_ms"},
    LimitScope.STRATEGY: {"max_order_value", "max_position_value", "max_open_orders", "max_leverage",
                          "max_daily_loss", "price_collar", "market_band", "max_var"},
}


def _convert(where, name, value, decimals, step=1) -> int:
    try:
        return to_units(value, decimals, step, what=name)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: `{name}`: {e}") from None


def limit_value(field: str, value, cash_decimals: int, qty_decimals: int = 0, where="", name=None) -> int:
    """One RiskLimits value in the engine's integer units (cash units, bps, qty units, counts)."""
    unit = _LIMIT_FIELDS[field][1]
    name = name or field
    if unit == "cash":
        return _convert(where, name, value, cash_decimals)
    if unit == "bps":
        return _convert(where, name, value, 4)
    if unit == "qty":
        return _convert(where, name, value, qty_decimals)
    return int(value)


def risk_limits(cfg: Config, where: str = "config") -> dict[tuple[int, int, int], int]:
    """Every limit the config sets: (LimitScope, target id, LimitKind) -> value in engine units."""
    out = {}
    r = cfg.risk
    scopes = [(LimitScope.DEFAULT, 0, r.defaults, "risk.defaults", 0)]
    scopes += [(LimitScope.ACCOUNT, a.id, a.limits, f"accounts.{a.name}.limits", 0) for a in cfg.accounts if a.limits]
    scopes += [(LimitScope.SYMBOL, s.id, s.limits, f"symbols.{s.name}.limits", s.qty_decimals)
               for s in cfg.symbols if s.limits]
    for st in r.strategies:
        if not 0 <= st.id < r.max_strategies:
            raise ConfigError(f"{where}: `risk.strategies.id` {st.id} outside 0..risk.max_strategies-1")
        scopes.append((LimitScope.STRATEGY, st.id, st.limits, f"risk.strategies.{st.id}.limits", 0))
    for scope, target, limits, prefix, qty_decimals in scopes:
        for kind, v in scope_limits(scope, limits, r.cash_decimals, qty_decimals, where, prefix).items():
            out[(int(scope), target, kind)] = v
    return out


def scope_limits(scope: LimitScope, limits: RiskLimits, cash_decimals: int, qty_decimals: int = 0,
                 where: str = "config", prefix: str = "limits") -> dict[int, int]:
    """The limits one RiskLimits sets at one scope: LimitKind -> value in engine units. The one
    conversion of limits in human units: the config's tables and the admin's set_limit."""
    out = {}
    for field in limits.__struct_fields__:
        value = getattr(limits, field)
        if value is None:
            continue
        limit_kind(scope, field, where, prefix)
        v = limit_value(field, value, cash_decimals, qty_decimals, where, f"{prefix}.{field}")
        if v < 0 and field not in ("maker_fee", "taker_fee"):
            raise ConfigError(f"{where}: `{prefix}.{field}` must not be negative")
        out[int(_LIMIT_FIELDS[field][0])] = v
    return out


def limit_kind(scope: LimitScope, field: str, where: str = "config", prefix: str = "limits") -> int:
    """The LimitKind of a RiskLimits field, if this scope may set it (engine/RISK.md "Limits")."""
    if field not in _LIMIT_FIELDS:
        raise ConfigError(f"{where}: unknown limit `{field}`: one of {', '.join(_LIMIT_FIELDS)}")
    if field not in _SCOPE_FIELDS[scope]:
        raise ConfigError(f"{where}: `{prefix}.{field}` cannot be set at this scope (engine/RISK.md)")
    return int(_LIMIT_FIELDS[field][0])


LIMIT_FIELD = {int(kind): field for field, (kind, _) in _LIMIT_FIELDS.items()}   # LimitKind -> RiskLimits field


def limit_human(kind: int, value: int, cash_decimals: int, qty_decimals: int = 0):
    """A limit's engine value back in the units RiskLimits takes (Decimal money and ratios, int counts)."""
    field = LIMIT_FIELD[kind]
    unit = _LIMIT_FIELDS[field][1]
    if unit == "int":
        return bool(value) if field in ("external_mark", "large_reject") else int(value)
    return from_units(value, {"cash": cash_decimals, "bps": 4, "qty": qty_decimals}[unit])
