"""The trading-engine SDK: `from clients import Client, SyncClient` (and ShardedClient, SyncShardedClient)."""
from clients.client import (AccountStateReport, AlgoInfo, AlgoReport, AuthenticationError, BalanceReport, Book,
                            Client, ConnectionClosed, Depth, ExecutionReport, Level, ModelFigures, OrderInfo,
                            OrderRejected, Portfolio, Position, RateLimitError, RequestTimeout, RiskMetrics,
                            ServerError, StressResult, VaR,
                            Subscription, Symbol, SyncClient, SyncSubscription, TopOfBook, Trade, TradeSummary,
                            TradingEngineError, signing_key)
from clients.sharded import ShardedClient, SyncShardedClient

__all__ = ["AccountStateReport", "AlgoInfo", "AlgoReport", "AuthenticationError", "BalanceReport", "Book", "Client",
           "ConnectionClosed", "Depth", "ExecutionReport", "Level", "ModelFigures", "OrderInfo", "OrderRejected",
           "Portfolio", "Position", "RateLimitError", "RequestTimeout", "RiskMetrics", "ServerError", "StressResult",
           "VaR",
           "Subscription", "Symbol", "SyncClient", "SyncSubscription", "ShardedClient", "SyncShardedClient", "TopOfBook", "Trade", "TradeSummary",
           "TradingEngineError", "signing_key"]
