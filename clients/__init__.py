"""The trading-engine SDK: `from clients import Client, SyncClient`."""
from clients.client import (AccountStateReport, BalanceReport, Book, Client, Depth, ExecutionReport, Level, OrderInfo, Portfolio, Position, ServerError,
                            Subscription, Symbol, SyncClient, SyncSubscription, TopOfBook, Trade, TradeSummary,
                            signing_key)

__all__ = ["AccountStateReport", "BalanceReport", "Book", "Client", "Depth", "ExecutionReport", "Level", "OrderInfo", "Portfolio", "Position", "ServerError",
           "Subscription", "Symbol", "SyncClient", "SyncSubscription", "TopOfBook", "Trade", "TradeSummary",
           "signing_key"]
