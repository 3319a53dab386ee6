"""Post-trade analytics over the ledger, as plain functions: fills, fees, realised and
unrealised PnL and max drawdown (of equity marked at fill prices), per symbol and strategy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tradpal.errors import InputError


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


@dataclass
class AnalyticsInputs:
    """What the analytics need, from the ledger or from a replay's output folder."""

    label: str
    run: dict | None = None
    run_id: str | None = None
    equity: pd.DataFrame | None = None
    fills: pd.DataFrame | None = None  # ledger fills (order_pk, ...) or replay fills
    orders: pd.DataFrame | None = None
    signals: pd.DataFrame | None = None
    rejections: pd.DataFrame | None = None
    bars: dict | None = None  # symbol -> OHLCV frame
    marks: dict | None = None
    slippage_bps: float = 0.0

    @property
    def fill_bars(self) -> pd.DataFrame | None:
        """The bars of a single-symbol paper run, for the price-within-bar expectation."""
        if not self.bars or len(self.bars) != 1:
            return None
        return next(iter(self.bars.values()))

    def equity_or_empty(self) -> pd.DataFrame:
        if self.equity is not None:
            return self.equity
        return pd.DataFrame({"timestamp": pd.Series(dtype="datetime64[ns, UTC]"), "cash": [], "position_value": [],
                             "equity": []})

    def named_fills(self) -> pd.DataFrame:
        """Fills with their strategy and symbol (for the per-strategy table)."""
        f = self.fills if self.fills is not None else pd.DataFrame(
            columns=["id", "timestamp", "symbol", "side", "quantity", "price", "fee", "strategy"])
        if "strategy" not in f and self.orders is not None and "strategy" in self.orders:
            f = f.merge(self.orders[["id", "strategy"]].rename(columns={"id": "order_pk"}), on="order_pk", how="left")
        if "id" not in f:
            f = f.assign(id=np.arange(len(f)))
        return f.assign(strategy=f["strategy"].fillna("unknown")) if "strategy" in f else f.assign(strategy="unknown")

    def report_fills(self) -> pd.DataFrame:
        """Fills for the report: with ``slippage_bps`` against the signal's reference price
        (positive = worse for us) when the ledger knows it."""
        f = self.named_fills()
        if self.orders is not None and self.signals is not None and "order_pk" in f and "reference_price" in self.signals:
            refs = self.orders[["id", "signal_pk"]].merge(
                self.signals[["id", "reference_price"]].rename(columns={"id": "signal_pk", "reference_price": "ref"}),
                on="signal_pk").rename(columns={"id": "order_pk"})[["order_pk", "ref"]]
            f = f.merge(refs, on="order_pk", how="left")
            sign = np.where(f["side"] == "buy", 1.0, -1.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                f["slippage_bps"] = sign * (f["price"] / f["ref"] - 1.0) * 1e4
        cols = ("timestamp", "side", "quantity", "price", "fee", "symbol", "strategy", "slippage_bps")
        return f[[c for c in cols if c in f]]

    def orders_or_empty(self) -> pd.DataFrame:
        return self.orders if self.orders is not None else pd.DataFrame(columns=["strategy", "symbol"])

    def rejections_or_empty(self) -> pd.DataFrame:
        return self.rejections if self.rejections is not None else pd.DataFrame(columns=["step", "reason"])


def inputs_from_ledger(ledger, *, run_id: str | None = None, since: str | None = None) -> AnalyticsInputs:
    """One run (default: the latest) or every run started since ``since`` (ISO date)."""
    runs = ledger.frame("runs")
    if since is not None:
        try:
            start = pd.Timestamp(since, tz="UTC") if pd.Timestamp(since).tzinfo is None else pd.Timestamp(since)
        except ValueError:
            raise InputError(f"--since: not a date: {since!r}") from None
        ids = runs.loc[runs["started_at"] >= start, "id"].tolist()
        label = f"runs since {start.date()} ({len(ids)})"
    else:
        if run_id is None and len(runs):
            run_id = str(runs["id"].iloc[-1])
        if run_id is not None and ledger.get_run(run_id) is None:
            raise InputError(f"--run: no run {run_id!r} in ledger {ledger.url}")
        ids = [run_id] if run_id else []
        label = f"run {run_id}" if run_id else "empty ledger"

    def rows(table: str) -> pd.DataFrame:
        frames = [ledger.frame(table, run_id=i) for i in ids]
        return pd.concat(frames, ignore_index=True) if frames else ledger.frame(table, run_id="-none-")

    signals = rows("signals")
    orders = rows("orders").merge(signals[["id", "strategy"]].rename(columns={"id": "signal_pk"}), on="signal_pk",
                                  how="left")
    run = ledger.get_run(ids[0]) if len(ids) == 1 else None
    data = AnalyticsInputs(label=label, run=run, run_id=ids[0] if len(ids) == 1 else None, fills=rows("fills"),
                           orders=orders, signals=signals, rejections=rows("rejections"))
    if run is not None:
        _attach_replay_outputs(data, run)
    return data


def _attach_replay_outputs(data: AnalyticsInputs, run: dict) -> None:
    """A replay run's equity curve (its equity.csv) and bars (its OHLCV file), when still on disk."""
    from tradpal.io import load_ohlcv

    params = run.get("params") or {}
    outputs = (run.get("summary") or {}).get("outputs") or []
    equity_csv = next((Path(o) for o in outputs if str(o).endswith("equity.csv")), None)
    if equity_csv is not None and equity_csv.exists():
        data.equity = pd.read_csv(equity_csv, parse_dates=["timestamp"])
    ohlcv, symbol = params.get("ohlcv"), params.get("symbol")
    if ohlcv and symbol and Path(ohlcv).exists():
        data.bars = {symbol: load_ohlcv(ohlcv)}
    data.slippage_bps = float(params.get("slippage_bps") or 0.0)


def inputs_from_replay(directory: str) -> AnalyticsInputs:
    d = Path(directory)
    for name in ("equity.csv", "fills.csv"):
        if not (d / name).is_file():
            raise InputError(f"--from-replay: {d / name} not found (expected a `tradpal replay --out` folder)")
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    symbol = str(summary.get("symbol") or "unknown")
    equity = pd.read_csv(d / "equity.csv", parse_dates=["timestamp"])
    fills = pd.read_csv(d / "fills.csv", dtype={"signal_id": str}, parse_dates=["timestamp"]).assign(
        symbol=symbol, strategy="replay")
    held = float((np.where(fills["side"] == "buy", 1.0, -1.0) * fills["quantity"]).sum()) if len(fills) else 0.0
    marks = None
    if abs(held) > 1e-12 and len(equity):
        marks = {symbol: float(equity["position_value"].iloc[-1]) / held}
    return AnalyticsInputs(label=f"replay {d}", equity=equity, fills=fills, marks=marks)


def summary_markdown(metrics: dict, quality, outputs: list[str]) -> str:
    keys = ["sharpe", "sortino", "calmar", "max_drawdown", "max_drawdown_days", "var_95", "cvar_95", "var_99",
            "cvar_99", "fill_rate", "slippage_ref_bps_mean", "realized_pnl", "unrealized_pnl", "total_fees",
            "success_rate", "exposure_mean"]
    lines = ["## Metrics", "", "| metric | value |", "|---|---|"]
    for k in keys:
        v = metrics.get(k)
        lines.append(f"| {k} | {'—' if v is None else (f'{v:.6g}' if isinstance(v, float) else v)} |")
    if quality is not None:
        lines += ["", quality.to_markdown()]
    if outputs:
        lines += ["", "Outputs: " + ", ".join(f"`{o}`" for o in outputs)]
    return "\n".join(lines)


def chart_tables(metrics: dict, table: pd.DataFrame, equity: pd.DataFrame | None = None,
                 fills: pd.DataFrame | None = None, max_rows: int = 500) -> dict[str, list[dict]]:
    """The report's charts' data as table artifacts (key -> rows): equity and drawdown
    (evenly thinned to ``max_rows``), P&L attribution, the slippage histogram, latency."""
    out: dict[str, list[dict]] = {}
    if equity is not None and len(equity):
        eq = equity["equity"].to_numpy("float64")
        peak = np.maximum.accumulate(eq)
        with np.errstate(invalid="ignore", divide="ignore"):
            dd = np.where(peak > 0, 1.0 - eq / peak, 0.0)
        keep = np.unique(np.linspace(0, len(eq) - 1, min(max_rows, len(eq))).astype(int))
        out["equity-curve"] = [{"timestamp": str(equity["timestamp"].iloc[i]), "equity": float(eq[i]),
                                "drawdown": float(dd[i])} for i in keep]
    if fills is not None and "slippage_bps" in fills and fills["slippage_bps"].notna().any():
        counts, edges = np.histogram(fills["slippage_bps"].dropna().to_numpy("float64"), bins=20)
        out["slippage-histogram"] = [{"from_bps": float(a), "to_bps": float(b), "fills": int(c)}
                                     for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)]
    for key in ("pnl_by_strategy", "pnl_by_asset", "pnl_by_day"):
        rows = metrics.get(key)
        if isinstance(rows, list) and rows:
            out[key.replace("_", "-")] = rows[:500]
    latency = [{"latency": k, "seconds": v} for k, v in metrics.items() if k.startswith("latency_") and v is not None]
    if latency:
        out["latency-percentiles"] = latency
    if len(table):
        out["post-trade-breakdown"] = table.to_dict("records")
    return out


def alert_quality_failure(quality, label: str, flow_run_id: str | None) -> None:
    """The executions gate failed: alert every configured channel (never raises)."""
    from risk.alerts import alerter_from_env

    alerter = alerter_from_env()
    if alerter is not None:
        first = quality.failed[0]["description"] if quality.failed else "see the summary"
        alerter.notify(f"quality:{quality.suite}", f"TradPal data-quality gate failed: {quality.suite}",
                       f"{label}: {first}. {quality.summary.splitlines()[0]} Flow run {flow_run_id}.",
                       level="failure")
