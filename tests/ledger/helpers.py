"""Frame builders for ledger tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def signals_frame(n: int = 3, *, prefix: str = "s", start: datetime = T0) -> pd.DataFrame:
    ts = [start + timedelta(minutes=5 * i) for i in range(n)]
    return pd.DataFrame(
        {
            "signal_id": [f"{prefix}{i}" for i in range(n)],
            "timestamp": ts,
            "symbol": "ETH/BTC",
            "side": ["buy" if i % 2 == 0 else "sell" for i in range(n)],
            "quantity": [1.5 + i for i in range(n)],
            "strategy": "ema_cross",
            "order_type": "limit",
            "limit_price": [0.05 + i / 1000 for i in range(n)],
            "stop_price": np.nan,
            "reference_price": [0.0501 + i / 1000 for i in range(n)],
            "received_at": [t + timedelta(seconds=1) for t in ts],
        }
    )


def orders_frame(signals: pd.DataFrame, *, prefix: str = "c") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "signal_id": signals["signal_id"],
            "client_order_id": [f"{prefix}-{sid}" for sid in signals["signal_id"]],
            "symbol": signals["symbol"],
            "side": signals["side"],
            "order_type": signals["order_type"],
            "quantity": signals["quantity"],
            "price": signals["limit_price"],
            "stop_price": np.nan,
            "time_in_force": "GTC",
            "created_at": pd.to_datetime(signals["timestamp"], utc=True) + pd.Timedelta(seconds=2),
        }
    )


def fills_frame(orders: pd.DataFrame, *, prefix: str = "t") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "client_order_id": orders["client_order_id"],
            "trade_id": [f"{prefix}-{c}" for c in orders["client_order_id"]],
            "timestamp": pd.to_datetime(orders["created_at"], utc=True) + pd.Timedelta(seconds=3),
            "symbol": orders["symbol"],
            "side": orders["side"],
            "quantity": orders["quantity"],
            "price": orders["price"],
            "fee": orders["quantity"] * orders["price"] * 0.001,
            "fee_currency": "BTC",
            "is_maker": True,
            "reference_price": orders["price"],
        }
    )
