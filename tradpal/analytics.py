"""Post-trade analytics over the ledger, as plain functions: fills, fees, realised and
unrealised PnL and max drawdown (of equity marked at fill prices), per symbol and strategy."""

from __future__ import annotations

import numpy as np
import pandas as pd


def pnl_by_fill(fills: pd.DataFrame) -> pd.DataFrame:
    """Average-cost P&L per fill, per (strategy, symbol), in fill order."""
    out = fills.sort_values(["timestamp", "id"]).copy()
    realized = np.zeros(len(out))
    position = np.zeros(len(out))
    held: dict[tuple, float] = {}
    basis: dict[tuple, float] = {}
    for i, (key, side, qty, px) in enumerate(zip(zip(out["strategy"], out["symbol"], strict=True), out["side"],
                                                 out["quantity"], out["price"], strict=True)):
        h, b = held.get(key, 0.0), basis.get(key, 0.0)
        if side == "buy":
            h, b = h + qty, b + qty * px
        else:
            avg = b / h if h > 0 else px
            realized[i] = (px - avg) * qty
            h, b = h - qty, b - avg * qty
        held[key], basis[key] = h, b
        position[i] = h
    out["realized_pnl"] = realized
    out["position_after"] = position
    return out


def breakdown(fills: pd.DataFrame, orders: pd.DataFrame, rejections: pd.DataFrame) -> pd.DataFrame:
    """One row per (strategy, symbol)."""
    if fills.empty:
        return pd.DataFrame(columns=["strategy", "symbol", "orders", "fills", "fees", "realized_pnl",
                                     "unrealized_pnl", "position", "max_drawdown"])
    f = pnl_by_fill(fills)
    rows = []
    for (strategy, symbol), g in f.groupby(["strategy", "symbol"], sort=True):
        last_px = float(g["price"].iloc[-1])
        pos = float(g["position_after"].iloc[-1])
        buys = g[g["side"] == "buy"]
        sells = g[g["side"] == "sell"]
        cost_left = float((buys["quantity"] * buys["price"]).sum() - (sells["quantity"] * sells["price"]).sum()
                          + g["realized_pnl"].sum())
        cash = (np.where(g["side"] == "buy", -1, 1) * g["quantity"] * g["price"] - g["fee"]).cumsum()
        equity = cash + g["position_after"] * g["price"]
        rows.append({"strategy": strategy, "symbol": symbol,
                     "orders": int(((orders["strategy"] == strategy) & (orders["symbol"] == symbol)).sum()),
                     "fills": len(g), "fees": float(g["fee"].sum()), "realized_pnl": float(g["realized_pnl"].sum()),
                     "unrealized_pnl": pos * last_px - cost_left, "position": pos,
                     "max_drawdown": _fill_drawdown(equity.to_numpy("float64"))})
    return pd.DataFrame(rows)


def _fill_drawdown(pnl_curve: np.ndarray) -> float:
    """Largest peak-to-trough fall of cumulative P&L at fill times, in quote units."""
    if len(pnl_curve) == 0:
        return 0.0
    peak = np.maximum.accumulate(np.maximum(pnl_curve, 0.0))
    return float((peak - pnl_curve).max())


def report_markdown(run: dict | None, table: pd.DataFrame, rejections: pd.DataFrame) -> str:
    title = f"run `{run['id']}` ({run['kind']}, {run['status']})" if run else "all runs"
    lines = [f"# Post-trade analytics: {title}", ""]
    if table.empty:
        lines.append("No fills.")
    else:
        lines += ["| strategy | symbol | orders | fills | fees | realised PnL | unrealised PnL | position | "
                  "max drawdown (PnL) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in table.itertuples():
            lines.append(f"| {r.strategy} | {r.symbol} | {r.orders} | {r.fills} | {r.fees:.8f} | {r.realized_pnl:.8f} "
                         f"| {r.unrealized_pnl:.8f} | {r.position:.8f} | {r.max_drawdown:.8f} |")
    if len(rejections):
        lines += ["", "## Rejections by step", ""]
        for (step, n) in rejections.groupby("step").size().items():
            lines.append(f"- {step}: {n}")
    return "\n".join(lines)
