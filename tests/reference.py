"""An independent, deliberately simple reference implementation of the `next-open` fill
model of the replay contract (README, "Replay contract"), used to check the pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd


def reference_next_open(bars: pd.DataFrame, signals: pd.DataFrame, *, cash: float, fee_rate: float,
                        slippage_bps: float) -> dict:
    ts = bars["timestamp"].to_numpy("datetime64[ns]")
    opens = bars["open"].to_numpy("float64")
    position = 0.0
    fills, rejected, unfilled = [], 0, 0
    for sig in signals.itertuples():
        later = np.flatnonzero(ts > np.datetime64(pd.Timestamp(sig.timestamp).tz_convert(None)))
        if len(later) == 0:
            unfilled += 1
            continue
        i = later[0]
        if sig.side == "buy":
            price = opens[i] * (1 + slippage_bps / 1e4)
            fee = fee_rate * sig.quantity * price
            if sig.quantity * price + fee > cash * (1 + 1e-9):
                rejected += 1
                continue
            cash -= sig.quantity * price + fee
            position += sig.quantity
        else:
            price = opens[i] * (1 - slippage_bps / 1e4)
            fee = fee_rate * sig.quantity * price
            if sig.quantity > position + 1e-12:
                rejected += 1
                continue
            cash += sig.quantity * price - fee
            position -= sig.quantity
        fills.append((sig.signal_id, sig.side, sig.quantity, price, fee))
    final_equity = cash + position * float(bars["close"].iloc[-1])
    return {"fills": pd.DataFrame(fills, columns=["signal_id", "side", "quantity", "price", "fee"]),
            "final_cash": cash, "final_position": position, "final_equity": final_equity,
            "rejected": rejected, "unfilled": unfilled}
