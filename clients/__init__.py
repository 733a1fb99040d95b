"""The trading-engine SDK: `from clients import Client, SyncClient`."""
from clients.client import (AccountStateReport, AlgoInfo, AlgoReport, AuthenticationError, BalanceReport, Book, Client, ConnectionClosed,
                            Depth, ExecutionReport, Level, OrderInfo, OrderRejected, Portfolio, Position,
                            RateLimitError, RequestTimeout, ServerError,
                            Subscription, Symbol, SyncClient, SyncSubscription, TopOfBook, Trade, TradeSummary,
                            TradingEngineError, signing_key)

__all__ = ["AccountStateReport", "AlgoInfo", "AlgoReport", "AuthenticationError", "BalanceReport", "Book", "Client", "ConnectionClosed", "Depth",
           "ExecutionReport", "Level", "OrderInfo", "OrderRejected", "Portfolio", "Position", "RateLimitError",
           "RequestTimeout", "ServerError",
           "Subscription", "Symbol", "SyncClient", "SyncSubscription", "TopOfBook", "Trade", "TradeSummary",
           "TradingEngineError", "signing_key"]
