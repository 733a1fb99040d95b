"""The trading-engine SDK: `from clients import Client, SyncClient`."""
from clients.client import (Book, Client, ExecutionReport, Level, OrderInfo, ServerError, Symbol, SyncClient,
                            signing_key)

__all__ = ["Book", "Client", "ExecutionReport", "Level", "OrderInfo", "ServerError", "Symbol", "SyncClient",
           "signing_key"]
