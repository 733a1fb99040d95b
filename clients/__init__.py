"""The trading-engine SDK: `from clients import Client, SyncClient`."""
from clients.client import (AccountStateReport, AlgoInfo, AlgoReport, AuthenticationError, BalanceReport, Book,
                            Client, ConnectionClosed, Depth, ExecutionReport, Level, ModelFigures, OrderInfo,
                            OrderRejected, Portfolio, Position, RateLimitError, RequestTimeout, RiskMetrics,
                            ServerError, StressResult, VaR,
                            Subscription, Symbol, SyncClient, SyncSubscription, TopOfBook, Trade, TradeSummary,
                            TradingEngineError, signing_key)
from clients.sharded import ShardedClient

__all__ = ["AccountStateReport", "AlgoInfo", "AlgoReport", "AuthenticationError", "BalanceReport", "Book", "Client",
           "ConnectionClosed", "Depth", "ExecutionReport", "Level", "ModelFigures", "OrderInfo", "OrderRejected",
           "Portfolio", "Position", "RateLimitError", "RequestTimeout", "RiskMetrics", "ServerError", "StressResult",
           "VaR",
           "Subscription", "Symbol", "SyncClient", "SyncSubscription", "ShardedClient", "TopOfBook", "Trade", "TradeSummary",
           "TradingEngineError", "signing_key"]
