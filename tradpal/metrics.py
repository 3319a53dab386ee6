"""Post-trade metrics: risk of the equity curve, execution quality, and P&L, as plain
vectorised functions over pandas frames (no Prefect, no ledger access, no loops over fills).

    metrics = compute_metrics(equity, fills, orders=orders, signals=signals,
                              rejections=rejections, bars=bars)
    write_metrics(metrics, out_dir)                      # out_dir/metrics.json
    metrics_from_replay(".tradpal/demo")                 # from a replay's output files

Inputs are the ledger's frames (``Ledger.frame(...)``) or the replay's CSVs: ``equity`` has
``timestamp, equity`` (+ ``position_value``), one row per bar; ``fills`` has ``timestamp,
side, quantity, price`` (+ ``fee, symbol, strategy, order_pk | client_order_id | signal_id,
reference_price``). Timestamps are UTC (aware datetimes, or ISO-8601 strings).

Conventions (each is tested against a hand-computed case in tests/tradpal/test_metrics.py):

Risk (the equity curve)
- Daily returns ``r``: the curve sampled at each UTC day's last row; ``r_d = E_d / E_{d-1} - 1``
  for consecutive sampled days (days without rows are skipped), so n days give n - 1 returns.
  The first row is not a sample of its own: only day-end values are. Non-finite returns (a
  day ending at zero equity) are left out.
- Annualisation: 365 days. ``risk_free`` is an annual simple rate; daily ``rf = risk_free / 365``,
  subtracted from ``r`` for Sharpe and Sortino only.
- Sharpe = mean(r - rf) / std(r - rf, ddof=1) * sqrt(365).
- Sortino = mean(r - rf) * 365 / (sqrt(mean(min(r - rf, 0)^2)) * sqrt(365)) (downside deviation
  over all returns, target 0).
- VaR_a = -quantile(r, 1 - a) (linear interpolation); CVaR_a = -mean(r where r <= -VaR_a).
  Positive numbers are losses. a = 0.95 and 0.99.
- Max drawdown = max over t of 1 - E_t / max_{s<=t} E_s on the full-resolution curve (a positive
  fraction; 0 where the running peak is <= 0). Its duration (``max_drawdown_days``) is the longest
  time, in days (float), from a peak until the curve regains it (E >= peak) or, if it never does,
  until the last row.
- Annualised return = (E_end / E_start)^(365 / days) - 1, days = span of the curve in days (first
  to last row). Calmar = annualised return / max drawdown.
- Undefined figures are None (JSON null), never NaN or inf: fewer than 2 daily returns (Sharpe,
  Sortino, VaR, CVaR), a standard or downside deviation <= 1e-12 (a flat curve), a drawdown
  <= 1e-12 (Calmar), a zero-length curve or non-positive start equity (annualised return).

Execution (fills + orders, optionally signals, rejections, bars)
- Fills are matched to orders by ``order_pk`` (ledger) or ``client_order_id``, else through their
  ``signal_id``; orders to signals by ``signal_pk`` (ledger) or ``signal_id``.
- ``fill_rate`` = filled quantity / ordered quantity over all orders (``orders.filled_quantity``
  when present, else the matched fills); ``fill_rate_orders`` = orders completely filled
  (filled >= quantity * (1 - 1e-9)) / orders. Every order counts, rejected ones included.
- Slippage (bps, positive = worse for us: a buy paying above, a sell receiving below the
  benchmark), one value per fill, unweighted; mean, median and p95 (linear):
  ``ref``: the signal's reference price (``fills.reference_price`` when no signal matches);
  ``arrival`` (implementation shortfall): the close of the last bar at or before the order's
  placement time (``placed_at``, else ``created_at``, else the signal's time) when bars are given,
  else (or when no such bar exists) the reference price;
  ``vwap``: the typical price (high + low + close) / 3 of the bar containing the fill (the last bar
  starting at or before it); only with bars.
  ``bars`` is one frame (``timestamp, high, low, close`` + optional ``symbol``; without ``symbol``
  it is taken to be every fill's symbol) or a mapping symbol -> frame.
- Latency (seconds, not clipped; p50/p95/p99/max, linear): signal -> placement
  (``placed_at - signal.timestamp``); placement -> first fill; signal -> done, where done is the
  last fill of a FILLED order and ``updated_at`` of any other terminal order (CANCELED, REJECTED,
  EXPIRED); orders not terminal are left out.
- Rejections: counts by ``step`` and by ``reason``.

P&L (per (strategy, symbol) book; fees are in the quote currency)
- Average cost, as the pipeline's book: a fill that opens or increases a position moves the
  average cost to the quantity-weighted mean; one that reduces it realises
  (price - average cost) * quantity (* -1 for a short) and leaves the average unchanged; one that
  crosses zero closes the old position and opens the rest at its price. Realised P&L is gross
  of fees (``total_fees`` is separate); net = realised + unrealised - fees.
- Unrealised P&L: position * (mark - average cost), the mark being ``marks[symbol]`` if given,
  else the last bar close of the symbol, else its last fill price.
- Round trip: the fills of one (strategy, symbol) from a flat position until it is flat again
  (or changes sign: a crossing fill's fee is split pro rata between the trip it closes and the
  one it opens). Profitable when its realised P&L minus its fees > 0. ``success_rate`` =
  profitable / completed trips; a trip still open at the end is not counted.
- Attribution: ``pnl_by_strategy`` / ``pnl_by_asset``: fills, fees, realised, unrealised and net
  P&L per strategy / symbol. ``pnl_by_day`` / ``_week`` (Monday-based, labelled by the Monday) /
  ``_month`` (UTC): per period, the equity curve's change (last value of the period minus last value
  of the previous period; the first period starts from the curve's first row) and return, plus
  the realised P&L, fees and fills of the fills in the period, in total and per strategy and
  symbol. Per-period equity changes add up to E_end - E_start.
- Exposure: |position_value| / equity per equity row (rows with equity <= 0 left out); mean over
  rows (not time-weighted) and max.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DAYS_PER_YEAR",
    "annualized_return",
    "book_fills",
    "calmar_ratio",
    "compute_metrics",
    "conditional_value_at_risk",
    "daily_returns",
    "execution_metrics",
    "exposure",
    "max_drawdown",
    "max_drawdown_days",
    "metrics_from_replay",
    "pnl_attribution",
    "prepare_fills",
    "rejection_counts",
    "risk_metrics",
    "round_trips",
    "sharpe_ratio",
    "sortino_ratio",
    "value_at_risk",
    "write_metrics",
]

DAYS_PER_YEAR = 365
ZERO = 1e-12  # deviations and drawdowns at or below this are treated as zero
DAY_NS = 86_400 * 10**9
TERMINAL = ("FILLED", "CANCELED", "REJECTED", "EXPIRED")
LATENCIES = ("signal_to_placement", "placement_to_first_fill", "signal_to_done")
SLIPPAGES = ("ref", "arrival", "vwap")
NAT = np.iinfo("int64").min


# -- small helpers ---------------------------------------------------------------------

def _ns(values: Any) -> np.ndarray:
    """UTC epoch nanoseconds (int64; NaT -> NAT) of datetimes or ISO-8601 strings."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if not isinstance(s.dtype, pd.DatetimeTZDtype) and s.dtype.kind != "M":
        s = pd.to_datetime(s, utc=True, format="ISO8601")
    elif isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC")
    return s.to_numpy("datetime64[ns]").view("int64")


def _float(x: Any) -> float | None:
    """A finite Python float, or None."""
    if x is None:
        return None
    x = float(x) + 0.0  # -0.0 -> 0.0
    return x if math.isfinite(x) else None


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return _float(x)
    return x


def _lookup(keys: Any, queries: Any) -> np.ndarray:
    """Row of each query in ``keys`` (first occurrence), -1 when absent or null."""
    index = pd.Index(keys)
    first = ~index.duplicated()
    rows = np.flatnonzero(first)
    found = index[first].get_indexer(pd.Index(queries))
    return np.where(found >= 0, rows[np.clip(found, 0, None)] if len(rows) else -1, -1)


def _take(values: np.ndarray, rows: np.ndarray, fill: Any) -> np.ndarray:
    """``values[rows]`` with ``fill`` where ``rows`` is -1."""
    if len(values) == 0:
        return np.full(len(rows), fill, dtype=np.result_type(values.dtype, np.asarray(fill).dtype))
    return np.where(rows >= 0, values[np.clip(rows, 0, None)], fill)


def _column(frame: pd.DataFrame | None, name: str) -> pd.Series | None:
    return frame[name] if frame is not None and name in frame.columns else None


def _distribution(values: np.ndarray, prefix: str, stats: tuple[str, ...]) -> dict[str, float | None]:
    v = values[np.isfinite(values)]
    out: dict[str, float | None] = {}
    for stat in stats:
        if len(v) == 0:
            out[f"{prefix}_{stat}"] = None
        elif stat == "mean":
            out[f"{prefix}_{stat}"] = _float(v.mean())
        elif stat == "median":
            out[f"{prefix}_{stat}"] = _float(np.median(v))
        elif stat == "max":
            out[f"{prefix}_{stat}"] = _float(v.max())
        else:  # "p95" -> 95th percentile
            out[f"{prefix}_{stat}"] = _float(np.percentile(v, float(stat[1:])))
    return out


# -- risk of the equity curve ----------------------------------------------------------

def _curve(equity: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps ns, equity) in time order."""
    if equity is None or len(equity) == 0:
        return np.array([], "int64"), np.array([], "float64")
    ts = _ns(equity["timestamp"])
    values = equity["equity"].to_numpy("float64")
    if len(ts) > 1 and (np.diff(ts) < 0).any():
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
    return ts, values


def _period_ends(keys: np.ndarray) -> np.ndarray:
    """Index of the last row of each run of equal (sorted) keys."""
    if len(keys) == 0:
        return np.array([], "int64")
    return np.append(np.flatnonzero(keys[1:] != keys[:-1]), len(keys) - 1)


def daily_returns(timestamps: Any, equity: Any) -> np.ndarray:
    """Simple returns between consecutive UTC day-end values (n sampled days -> n - 1 returns)."""
    ts, values = np.asarray(timestamps), np.asarray(equity, "float64")
    if ts.dtype.kind != "i":
        ts = _ns(pd.Series(ts))
    ends = _period_ends(np.floor_divide(ts, DAY_NS))
    closes = values[ends]
    with np.errstate(divide="ignore", invalid="ignore"):
        return closes[1:] / closes[:-1] - 1.0


def sharpe_ratio(r: np.ndarray, risk_free: float = 0.0) -> float | None:
    """mean(r - rf) / std(r - rf, ddof=1) * sqrt(365); None with < 2 returns or zero std."""
    if len(r) < 2:
        return None
    x = np.asarray(r, "float64") - risk_free / DAYS_PER_YEAR
    std = x.std(ddof=1)
    return None if not std > ZERO else _float(x.mean() / std * math.sqrt(DAYS_PER_YEAR))


def sortino_ratio(r: np.ndarray, risk_free: float = 0.0) -> float | None:
    """mean(r - rf) * 365 / (sqrt(mean(min(r - rf, 0)^2)) * sqrt(365)); None without downside."""
    if len(r) < 2:
        return None
    x = np.asarray(r, "float64") - risk_free / DAYS_PER_YEAR
    downside = math.sqrt(float(np.mean(np.minimum(x, 0.0) ** 2)))
    if not downside > ZERO:
        return None
    return _float(x.mean() * DAYS_PER_YEAR / (downside * math.sqrt(DAYS_PER_YEAR)))


def value_at_risk(r: np.ndarray, alpha: float) -> float | None:
    """-quantile(r, 1 - alpha), linear interpolation; a positive number is a loss."""
    if len(r) < 2:
        return None
    return _float(-np.quantile(np.asarray(r, "float64"), 1.0 - alpha, method="linear"))


def conditional_value_at_risk(r: np.ndarray, alpha: float) -> float | None:
    """-mean(r where r <= -VaR_alpha)."""
    var = value_at_risk(r, alpha)
    if var is None:
        return None
    r = np.asarray(r, "float64")
    return _float(-r[r <= -var].mean())


def max_drawdown(equity: Any) -> float:
    """max over t of 1 - E_t / max_{s<=t} E_s, a positive fraction (0 for an empty curve)."""
    e = np.asarray(equity, "float64")
    if len(e) == 0:
        return 0.0
    peak = np.maximum.accumulate(e)
    with np.errstate(invalid="ignore", divide="ignore"):
        dd = np.where(peak > 0, 1.0 - e / peak, 0.0)
    return float(max(dd.max(), 0.0))


def max_drawdown_days(timestamps: Any, equity: Any) -> float:
    """Longest time (days) from a peak until the curve is back at it, or until the end."""
    ts, e = np.asarray(timestamps), np.asarray(equity, "float64")
    if ts.dtype.kind != "i":
        ts = _ns(pd.Series(ts))
    if len(e) == 0:
        return 0.0
    peak = np.maximum.accumulate(e)
    under = e < peak
    if not under.any():
        return 0.0
    idx = np.arange(len(e))
    last_peak = np.maximum.accumulate(np.where(under, 0, idx))  # row where the current peak was set
    starts = np.flatnonzero(under & ~np.concatenate([[False], under[:-1]]))  # first row of each spell
    stops = np.flatnonzero(under & ~np.concatenate([under[1:], [False]]))  # last row of each spell
    regained = np.minimum(stops + 1, len(e) - 1)  # the row back at the peak, or the last row
    return float((ts[regained] - ts[last_peak[starts]]).max() / DAY_NS)


def annualized_return(timestamps: Any, equity: Any) -> float | None:
    """(E_end / E_start)^(365 / days) - 1 over the curve's span; None when undefined."""
    ts, e = np.asarray(timestamps), np.asarray(equity, "float64")
    if ts.dtype.kind != "i":
        ts = _ns(pd.Series(ts))
    if len(e) < 2:
        return None
    days = (ts[-1] - ts[0]) / DAY_NS
    growth = e[-1] / e[0] if e[0] > 0 else float("nan")
    if not days > 0 or not growth >= 0:
        return None
    try:
        return _float(growth ** (DAYS_PER_YEAR / days) - 1.0)
    except OverflowError:
        return None


def calmar_ratio(annualized: float | None, drawdown: float) -> float | None:
    """annualised return / max drawdown; None without a drawdown."""
    if annualized is None or not drawdown > ZERO:
        return None
    return _float(annualized / drawdown)


def exposure(equity: pd.DataFrame | None) -> tuple[float | None, float | None]:
    """(mean, max) of |position_value| / equity over the rows with equity > 0."""
    if equity is None or "position_value" not in equity.columns:
        return None, None
    e = equity["equity"].to_numpy("float64")
    pv = equity["position_value"].to_numpy("float64")
    ok = e > 0
    if not ok.any():
        return None, None
    ratio = np.abs(pv[ok]) / e[ok]
    return _float(ratio.mean()), _float(ratio.max())


def risk_metrics(equity: pd.DataFrame | None, risk_free: float = 0.0) -> dict[str, Any]:
    ts, e = _curve(equity)
    r = daily_returns(ts, e) if len(e) else np.array([])
    r = r[np.isfinite(r)]
    mdd = max_drawdown(e)
    ann = annualized_return(ts, e)
    exp_mean, exp_max = exposure(equity)
    out: dict[str, Any] = {
        "n_returns": len(r),
        "sharpe": sharpe_ratio(r, risk_free),
        "sortino": sortino_ratio(r, risk_free),
        "annualized_return": ann,
        "max_drawdown": mdd if len(e) else None,
        "max_drawdown_days": max_drawdown_days(ts, e) if len(e) else None,
        "calmar": calmar_ratio(ann, mdd),
        "exposure_mean": exp_mean,
        "exposure_max": exp_max,
        "equity_start": _float(e[0]) if len(e) else None,
        "equity_end": _float(e[-1]) if len(e) else None,
    }
    for alpha in (95, 99):
        out[f"var_{alpha}"] = value_at_risk(r, alpha / 100)
        out[f"cvar_{alpha}"] = conditional_value_at_risk(r, alpha / 100)
    return out


# -- matching fills, orders and signals ------------------------------------------------

def _order_rows(fills: pd.DataFrame, orders: pd.DataFrame | None, signals: pd.DataFrame | None) -> np.ndarray:
    n = len(fills)
    if orders is None or len(orders) == 0:
        return np.full(n, -1)
    if "order_pk" in fills.columns and "id" in orders.columns:
        return _lookup(orders["id"], fills["order_pk"])
    if "client_order_id" in fills.columns and "client_order_id" in orders.columns:
        return _lookup(orders["client_order_id"], fills["client_order_id"])
    if "signal_id" in fills.columns:
        if "signal_id" in orders.columns:
            return _lookup(orders["signal_id"], fills["signal_id"])
        if signals is not None and {"signal_id", "id"} <= set(signals.columns) and "signal_pk" in orders.columns:
            pk = _take(signals["id"].to_numpy(), _lookup(signals["signal_id"], fills["signal_id"]), -1)
            return _lookup(orders["signal_pk"], pk)
    return np.full(n, -1)


def _signal_rows_of_orders(orders: pd.DataFrame | None, signals: pd.DataFrame | None) -> np.ndarray:
    if orders is None:
        return np.array([], "int64")
    if signals is None or len(signals) == 0:
        return np.full(len(orders), -1)
    if "signal_pk" in orders.columns and "id" in signals.columns:
        return _lookup(signals["id"], orders["signal_pk"])
    if "signal_id" in orders.columns and "signal_id" in signals.columns:
        return _lookup(signals["signal_id"], orders["signal_id"])
    return np.full(len(orders), -1)


def prepare_fills(fills: pd.DataFrame | None, orders: pd.DataFrame | None,
                   signals: pd.DataFrame | None) -> pd.DataFrame:
    """Fills normalised for `book_fills` and `execution_metrics`: time (ns), side sign, quantity,
    price, fee, strategy and symbol (own column, else the order's, else the signal's, else
    "default" / "unknown"), and the row of the matched order and signal (-1 if none)."""
    cols = ["ts", "sign", "quantity", "price", "fee", "strategy", "symbol", "order_row", "signal_row"]
    if fills is None or len(fills) == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    order_row = _order_rows(fills, orders, signals)
    sig_of_order = _signal_rows_of_orders(orders, signals)
    signal_row = _take(sig_of_order, order_row, -1) if orders is not None else np.full(len(fills), -1)
    if signals is not None and "signal_id" in fills.columns and "signal_id" in signals.columns:
        signal_row = np.where(signal_row >= 0, signal_row, _lookup(signals["signal_id"], fills["signal_id"]))
    codes, sides = pd.factorize(fills["side"])
    lowered = [str(s).lower() for s in sides]
    if not set(lowered) <= {"buy", "sell"}:
        raise ValueError(f"fills: unknown side(s) {sorted(set(lowered) - {'buy', 'sell'})} (expected buy or sell)")
    sign = np.array([1.0 if s == "buy" else -1.0 for s in lowered])[codes] if len(codes) else np.array([])
    return pd.DataFrame({
        "ts": _ns(fills["timestamp"]),
        "sign": sign,
        "quantity": fills["quantity"].to_numpy("float64"),
        "price": fills["price"].to_numpy("float64"),
        "fee": fills["fee"].to_numpy("float64", na_value=0.0) if "fee" in fills.columns else 0.0,
        "strategy": _label(fills, "strategy", order_row, orders, signal_row, signals, "default"),
        "symbol": _label(fills, "symbol", order_row, orders, signal_row, signals, "unknown"),
        "order_row": order_row,
        "signal_row": signal_row,
    })


def _label(fills, name, order_row, orders, signal_row, signals, default) -> np.ndarray:
    """The fill's own column, else its order's, else its signal's, else ``default``."""
    own = _column(fills, name)
    out = np.full(len(fills), None, dtype=object) if own is None else own.to_numpy(object)
    for frame, rows in ((orders, order_row), (signals, signal_row)):
        col = _column(frame, name)
        if col is not None:
            out = np.where(pd.isna(out), _take(col.to_numpy(object), rows, None), out)
    return np.where(pd.isna(out), default, out)


# -- average cost, round trips ---------------------------------------------------------

def _affine_scan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x_i = a_i * x_{i-1} + b_i with x_{-1} = 0, as a prefix scan of affine maps: log2(n)
    vectorised passes, no division (a run of a_i < 1 decays to 0 instead of overflowing)."""
    a, b = a.copy(), b.copy()
    d = 1
    while d < len(a):
        b[d:] = a[d:] * b[:-d] + b[d:]
        a[d:] = a[d:] * a[:-d]
        d *= 2
    return b


def book_fills(prepared: pd.DataFrame) -> pd.DataFrame:
    """Average-cost book per (strategy, symbol), fills in time order (ties: input order).

    Adds ``position_after, avg_cost_after, realized_pnl, trip`` (the round trip whose
    closing part the fill is), ``opens_trip`` (the round trip it opens, or -1),
    ``fee_to_trip`` (the part of the fee that belongs to ``trip``) and ``closes`` (it
    leaves its trip flat or crossed)."""
    n = len(prepared)
    if n == 0:
        return prepared.assign(position_after=[], avg_cost_after=[], realized_pnl=[], trip=[], opens_trip=[],
                               fee_to_trip=[], closes=[])
    strat, strategies = pd.factorize(prepared["strategy"], sort=True)
    sym, symbols = pd.factorize(prepared["symbol"], sort=True)
    key = strat.astype("int64") * (sym.max() + 1) + sym
    order = np.lexsort((prepared["ts"].to_numpy(), key))
    f = prepared.iloc[order].reset_index(drop=True)
    # categoricals (sorted): every later groupby works on the codes
    f["strategy"] = pd.Categorical.from_codes(strat[order], categories=strategies)
    f["symbol"] = pd.Categorical.from_codes(sym[order], categories=symbols)
    key = key[order]
    q, p, sign = (f[c].to_numpy("float64") for c in ("quantity", "price", "sign"))
    starts = np.concatenate([[True], key[1:] != key[:-1]])
    h_after = pd.Series(sign * q).groupby(key).cumsum().to_numpy()
    h_before = np.where(starts, 0.0, np.concatenate([[0.0], h_after[:-1]]))
    tol = 1e-9 * pd.Series(q).groupby(key).transform("max").to_numpy()
    flat_b, flat_a = np.abs(h_before) <= tol, np.abs(h_after) <= tol
    side_b = np.where(flat_b, 0.0, np.sign(h_before))
    increasing = ~flat_b & (side_b == sign)
    reducing = ~flat_b & (side_b == -sign)
    crossing = reducing & ~flat_a & (np.sign(h_after) == sign)
    reset = flat_b | crossing
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(reset, 0.0, np.where(increasing, np.abs(h_before) / np.abs(h_after), 1.0))
        b = np.where(reset, p, np.where(increasing, q * p / np.abs(h_after), 0.0))
    avg_after = _affine_scan(a, b)
    avg_before = np.where(starts, 0.0, np.concatenate([[0.0], avg_after[:-1]]))
    closed = np.where(crossing, np.abs(h_before), np.where(reducing, q, 0.0))
    trip_started = np.cumsum(reset) - 1
    fee = f["fee"].to_numpy("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        fee_close = np.where(crossing, fee * np.abs(h_before) / q, fee)
    return f.assign(
        position_after=np.where(flat_a, 0.0, h_after),
        avg_cost_after=np.where(flat_a, np.nan, avg_after),
        realized_pnl=(p - avg_before) * closed * side_b,
        trip=trip_started - crossing,
        opens_trip=np.where(reset, trip_started, -1),
        fee_to_trip=fee_close,
        closes=(reducing & flat_a) | crossing,
    )


def round_trips(booked: pd.DataFrame) -> pd.DataFrame:
    """One row per round trip: strategy, symbol, opened/closed (ns), realised, fees, net, closed."""
    cols = ["strategy", "symbol", "opened", "closed_at", "realized_pnl", "fees", "net_pnl", "complete"]
    if len(booked) == 0:
        return pd.DataFrame({c: pd.Series(dtype=bool if c == "complete" else object) for c in cols})
    n_trips = int(booked["opens_trip"].max()) + 1
    opener = booked[booked["opens_trip"] >= 0]
    fee_open = (booked["fee"] - booked["fee_to_trip"])[booked["opens_trip"] >= 0].to_numpy()
    # a crossing fill's opening share of its fee goes to the trip it opens
    crossing_open = np.where(opener["trip"].to_numpy() != opener["opens_trip"].to_numpy(), fee_open, 0.0)
    fees = (np.bincount(booked["trip"], booked["fee_to_trip"], n_trips)
            + np.bincount(opener["opens_trip"], crossing_open, n_trips))
    realized = np.bincount(booked["trip"], booked["realized_pnl"], n_trips)
    closers = booked[booked["closes"]]
    closed_at = np.full(n_trips, NAT)
    closed_at[closers["trip"].to_numpy()] = closers["ts"].to_numpy()
    return pd.DataFrame({
        "strategy": opener["strategy"].to_numpy(), "symbol": opener["symbol"].to_numpy(),
        "opened": opener["ts"].to_numpy(), "closed_at": closed_at, "realized_pnl": realized, "fees": fees,
        "net_pnl": realized - fees, "complete": closed_at != NAT,
    }, columns=cols)


# -- execution -------------------------------------------------------------------------

def _bar_tables(bars: Any) -> dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """symbol (or None: every symbol) -> (timestamps ns, close, typical price), in time order."""
    if bars is None:
        return {}
    if isinstance(bars, Mapping):
        frames = dict(bars.items())
    elif "symbol" in bars.columns:
        frames = {s: g for s, g in bars.groupby("symbol", sort=False)}
    else:
        frames = {None: bars}
    out = {}
    for sym, g in frames.items():
        ts = _ns(g["timestamp"])
        order = np.argsort(ts, kind="stable")
        close = g["close"].to_numpy("float64")[order]
        typical = (g["high"].to_numpy("float64")[order] + g["low"].to_numpy("float64")[order] + close) / 3.0
        out[sym] = (ts[order], close, typical)
    return out


def _bar_values(tables: dict, symbols: np.ndarray, at_ns: np.ndarray, which: int) -> np.ndarray:
    """Column ``which`` (1 close, 2 typical) of the last bar at or before each time; NaN if none."""
    out = np.full(len(at_ns), np.nan)
    for sym, table in tables.items():
        mine = np.ones(len(at_ns), bool) if sym is None else symbols == sym
        idx = np.searchsorted(table[0], at_ns[mine], side="right") - 1
        ok = (idx >= 0) & (at_ns[mine] != NAT)
        out[mine] = np.where(ok, table[which][np.clip(idx, 0, None)], np.nan)
    return out


def _signal_values(signals: pd.DataFrame | None, name: str, rows: np.ndarray) -> np.ndarray:
    """``reference_price`` (NaN when unknown) or ``timestamp`` (ns, NAT when unknown) of each row's signal."""
    col = _column(signals, name)
    if name == "timestamp":
        return np.full(len(rows), NAT) if col is None else _take(_ns(col), rows, NAT)
    return np.full(len(rows), np.nan) if col is None else _take(col.to_numpy("float64"), rows, np.nan)


def _slippage_bps(sign: np.ndarray, price: np.ndarray, benchmark: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return sign * (price / benchmark - 1.0) * 1e4


def _order_times(orders: pd.DataFrame, name: str) -> np.ndarray:
    col = _column(orders, name)
    return _ns(col) if col is not None else np.full(len(orders), NAT)


def execution_metrics(prepared: pd.DataFrame, *, orders: pd.DataFrame | None = None,
                      signals: pd.DataFrame | None = None, bars: Any = None) -> dict[str, Any]:
    """Fill rates, slippage (ref / arrival / vwap) and latencies; None where inputs are missing."""
    out: dict[str, Any] = {"n_orders": None, "n_orders_filled": None, "fill_rate": None, "fill_rate_orders": None}
    sign, price = prepared["sign"].to_numpy("float64"), prepared["price"].to_numpy("float64")
    signal_row = prepared["signal_row"].to_numpy("int64")
    ref = _signal_values(signals, "reference_price", signal_row)
    if "reference_price" in prepared.columns:
        ref = np.where(np.isnan(ref), prepared["reference_price"].to_numpy("float64"), ref)
    signal_ts = _signal_values(signals, "timestamp", signal_row)
    tables = _bar_tables(bars)
    order_row = prepared["order_row"].to_numpy("int64")
    placed_ns = np.full(len(prepared), NAT)
    if orders is not None and len(orders):
        placed = _order_times(orders, "placed_at")
        placed = np.where(placed == NAT, _order_times(orders, "created_at"), placed)
        placed_ns = _take(placed, order_row, NAT)
        out.update(_fill_rates(prepared, orders))
    placed_ns = np.where(placed_ns == NAT, signal_ts, placed_ns)
    symbols = prepared["symbol"].to_numpy(object)
    arrival = ref
    if tables:
        at_placement = _bar_values(tables, symbols, placed_ns, 1)
        arrival = np.where(np.isnan(at_placement), ref, at_placement)
    vwap = _bar_values(tables, symbols, prepared["ts"].to_numpy("int64"), 2) if tables \
        else np.full(len(prepared), np.nan)
    for name, benchmark in zip(SLIPPAGES, (ref, arrival, vwap), strict=True):
        out.update(_distribution(_slippage_bps(sign, price, benchmark), f"slippage_{name}_bps", ("mean", "median", "p95")))
    out.update(_latencies(prepared, orders, signals))
    return out


def _fill_rates(prepared: pd.DataFrame, orders: pd.DataFrame) -> dict[str, Any]:
    qty = orders["quantity"].to_numpy("float64")
    if "filled_quantity" in orders.columns:
        filled = orders["filled_quantity"].fillna(0.0).to_numpy("float64")
    else:
        rows = prepared["order_row"].to_numpy("int64")
        mine = rows >= 0
        filled = np.bincount(rows[mine], prepared["quantity"].to_numpy("float64")[mine], len(orders))
    complete = filled >= qty * (1 - 1e-9)
    total = qty.sum()
    return {"n_orders": len(orders), "n_orders_filled": int(complete.sum()),
            "fill_rate": _float(filled.sum() / total) if total > 0 else None,
            "fill_rate_orders": _float(complete.mean()) if len(orders) else None}


def _latencies(prepared: pd.DataFrame, orders: pd.DataFrame | None, signals: pd.DataFrame | None) -> dict[str, Any]:
    stats = ("p50", "p95", "p99", "max")
    empty = {f"latency_{name}_s_{s}": None for name in LATENCIES for s in stats}
    if orders is None or len(orders) == 0:
        return empty
    n = len(orders)
    sig_rows = _signal_rows_of_orders(orders, signals)
    signal_ts = _signal_values(signals, "timestamp", sig_rows)
    placed = _order_times(orders, "placed_at")
    rows = prepared["order_row"].to_numpy("int64")
    ts = prepared["ts"].to_numpy("int64")
    mine = rows >= 0
    first = np.full(n, np.iinfo("int64").max)
    last = np.full(n, NAT)
    np.minimum.at(first, rows[mine], ts[mine])
    np.maximum.at(last, rows[mine], ts[mine])
    first = np.where(first == np.iinfo("int64").max, NAT, first)
    status = np.full(n, "", object)
    if "status" in orders.columns:
        codes, names = pd.factorize(orders["status"])
        status = np.array([str(s).upper() for s in names] + [""], dtype=object)[codes]  # code -1 (null) -> ""
    updated = _order_times(orders, "updated_at")
    done = np.where(status == "FILLED", np.where(last != NAT, last, updated), updated)
    done = np.where(np.isin(status, TERMINAL), done, NAT)
    out = {}
    for name, (end, start) in zip(LATENCIES, ((placed, signal_ts), (first, placed), (done, signal_ts)), strict=True):
        ok = (end != NAT) & (start != NAT)
        seconds = (end[ok] - start[ok]) / 1e9
        out.update(_distribution(seconds, f"latency_{name}_s", stats))
    return out


def rejection_counts(rejections: pd.DataFrame | None) -> tuple[dict | None, dict | None]:
    """({step: count}, {reason: count}), most frequent first; (None, None) without the frame."""
    if rejections is None:
        return None, None
    counts: list[dict[str, int] | None] = []
    for col in ("step", "reason"):
        if col not in rejections.columns:
            counts.append(None)
            continue
        vc = rejections[col].fillna("unknown").astype(str).value_counts(sort=True)
        counts.append({str(k): int(v) for k, v in vc.items()})
    return counts[0], counts[1]


# -- P&L attribution ---------------------------------------------------------------------

def _marks(booked: pd.DataFrame, tables: dict, marks: Mapping[str, float] | None) -> dict[str, float]:
    """Mark per symbol: ``marks``, else the last bar close, else the last fill price."""
    last = booked.sort_values("ts", kind="stable").groupby("symbol", sort=False, observed=True)["price"].last()
    out = {str(k): float(v) for k, v in last.items()}
    for sym in out:
        table = tables.get(sym, tables.get(None))
        if table is not None and len(table[1]):
            out[sym] = float(table[1][-1])
        if marks and sym in marks:
            out[sym] = float(marks[sym])
    return out


def _books(booked: pd.DataFrame, mark: dict[str, float]) -> pd.DataFrame:
    """The last state of each (strategy, symbol) book, with its unrealised P&L."""
    g = booked.groupby(["strategy", "symbol"], sort=True, observed=True)
    last = booked.drop_duplicates(["strategy", "symbol"], keep="last").set_index(["strategy", "symbol"])
    last = last.loc[g.size().index, ["position_after", "avg_cost_after"]]
    table = pd.DataFrame({"n_fills": g.size(), "fees": g["fee"].sum(), "realized_pnl": g["realized_pnl"].sum(),
                          "position": last["position_after"]}).reset_index()
    marks = table["symbol"].astype(str).map(mark).to_numpy("float64")
    held = table["position"].to_numpy("float64")
    table["unrealized_pnl"] = np.where(held != 0, held * (marks - last["avg_cost_after"].to_numpy("float64")), 0.0)
    return table


def _by(table: pd.DataFrame, trips: pd.DataFrame, key: str, keep_position: bool, mark: dict) -> list[dict]:
    g = table.groupby(key, sort=True, observed=True)
    out = g[["n_fills", "fees", "realized_pnl", "unrealized_pnl"]].sum()
    out["net_pnl"] = out["realized_pnl"] + out["unrealized_pnl"] - out["fees"]
    done = trips[trips["complete"]]
    out["n_round_trips"] = done.groupby(key, observed=True).size().reindex(out.index, fill_value=0)
    out["n_profitable"] = done[done["net_pnl"] > 0].groupby(key, observed=True).size().reindex(out.index, fill_value=0)
    if keep_position:
        out["position"] = g["position"].sum()
        out["mark"] = [mark.get(str(s)) for s in out.index]
    return out.reset_index().to_dict("records")


def _period_keys(ts: np.ndarray, period: str) -> np.ndarray:
    day = np.floor_divide(ts, DAY_NS)
    if period == "day":
        return day
    if period == "week":
        return np.floor_divide(day + 3, 7)  # 1970-01-01 was a Thursday: weeks start on Monday
    return ts.astype("datetime64[ns]").astype("datetime64[M]").astype("int64")


def _period_label(key: int, period: str) -> str:
    if period == "day":
        return str(np.datetime64(int(key), "D"))
    if period == "week":
        return str(np.datetime64(int(key) * 7 - 3, "D"))
    return str(np.datetime64(int(key), "M"))


def _nested(series: pd.Series) -> dict[Any, dict[str, float]]:
    """A (period, name) -> value series as {period: {name: value}}."""
    out: dict[Any, dict[str, float]] = {}
    for (key, name), value in series.items():
        out.setdefault(key, {})[str(name)] = float(value)
    return out


def _period_table(period: str, ts: np.ndarray, e: np.ndarray, booked: pd.DataFrame) -> list[dict]:
    ekeys = _period_keys(ts, period)
    ends = _period_ends(ekeys)
    end_value = dict(zip(ekeys[ends].tolist(), e[ends].tolist(), strict=True))
    f = booked[["strategy", "symbol", "realized_pnl", "fee"]].assign(
        period=_period_keys(booked["ts"].to_numpy("int64"), period))
    g = f.groupby("period")
    totals = pd.DataFrame({"realized_pnl": g["realized_pnl"].sum(), "fees": g["fee"].sum(), "n_fills": g.size()})
    fill_totals = totals.to_dict("index")
    per = {name: _nested(f.groupby(["period", name], observed=True)["realized_pnl"].sum()) for name in ("strategy", "symbol")}
    rows = []
    previous = float(e[0]) if len(e) else None
    for key in sorted(set(end_value) | set(fill_totals)):
        end = end_value.get(key)
        change = end - previous if end is not None and previous is not None else None
        rows.append({"period": _period_label(key, period), "equity_start": previous, "equity_end": end,
                     "equity_change": change,
                     "return": change / previous if change is not None and previous and previous > 0 else None,
                     **fill_totals.get(key, {"realized_pnl": 0.0, "fees": 0.0, "n_fills": 0}),
                     "realized_by_strategy": per["strategy"].get(key, {}),
                     "realized_by_asset": per["symbol"].get(key, {})})
        previous = end if end is not None else previous
    return rows


def pnl_attribution(booked: pd.DataFrame, equity: pd.DataFrame | None, *, bars: Any = None,
                    marks: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Totals, round trips and the attribution tables (see the module docstring)."""
    ts, e = _curve(equity)
    out: dict[str, Any] = {f"pnl_by_{p}": _period_table(p, ts, e, booked) for p in ("day", "week", "month")}
    trips = round_trips(booked)
    done = trips[trips["complete"]]
    out.update(n_fills=len(booked), total_fees=float(booked["fee"].sum()), n_round_trips=len(done),
               n_profitable_round_trips=int((done["net_pnl"] > 0).sum()),
               success_rate=float((done["net_pnl"] > 0).mean()) if len(done) else None)
    if len(booked) == 0:
        out.update(realized_pnl=0.0, unrealized_pnl=0.0, net_pnl=0.0, pnl_by_strategy=[], pnl_by_asset=[])
        return out
    mark = _marks(booked, _bar_tables(bars), marks)
    books = _books(booked, mark)
    realized, unrealized = float(books["realized_pnl"].sum()), float(books["unrealized_pnl"].sum())
    out.update(realized_pnl=realized, unrealized_pnl=unrealized, net_pnl=realized + unrealized - out["total_fees"],
               pnl_by_strategy=_by(books, trips, "strategy", False, mark),
               pnl_by_asset=_by(books, trips, "symbol", True, mark))
    return out


# -- entry points ------------------------------------------------------------------------

def compute_metrics(equity: pd.DataFrame | None, fills: pd.DataFrame | None, *,
                    orders: pd.DataFrame | None = None, signals: pd.DataFrame | None = None,
                    rejections: pd.DataFrame | None = None, bars: Any = None, risk_free: float = 0.0,
                    marks: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Every metric, as a flat JSON-safe dict with stable keys (None where undefined or where
    the inputs are missing), plus the attribution tables ``pnl_by_strategy``, ``pnl_by_asset``,
    ``pnl_by_day``, ``pnl_by_week``, ``pnl_by_month`` (lists of records). ``marks`` overrides
    the price unrealised P&L is marked at, per symbol."""
    prepared = prepare_fills(fills, orders, signals)
    if fills is not None and "reference_price" in fills.columns:
        prepared["reference_price"] = fills["reference_price"].to_numpy("float64")
    out = risk_metrics(equity, risk_free)
    out.update(execution_metrics(prepared, orders=orders, signals=signals, bars=bars))
    out["rejections_by_step"], out["rejections_by_reason"] = rejection_counts(rejections)
    out["n_rejections"] = None if rejections is None else len(rejections)
    out.update(pnl_attribution(book_fills(prepared), equity, bars=bars, marks=marks))
    return _json_safe(out)


def metrics_from_replay(directory: str | Path) -> dict[str, Any]:
    """Metrics of a replay's output directory (``equity.csv``, ``fills.csv``, ``summary.json``).

    fills.csv carries no symbol, strategy or reference price: the symbol is summary.json's
    ``symbol`` (``unknown`` without it), the strategy ``replay``, slippage is None; the open
    position is marked at the curve's last ``position_value`` / position."""
    d = Path(directory)
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    symbol = str(summary.get("symbol") or "unknown")
    equity = pd.read_csv(d / "equity.csv")
    fills = pd.read_csv(d / "fills.csv", dtype={"signal_id": str}).assign(symbol=symbol, strategy="replay")
    held = float((np.where(fills["side"] == "buy", 1.0, -1.0) * fills["quantity"]).sum()) if len(fills) else 0.0
    marks = None
    if len(equity) and abs(held) > 1e-12 and "position_value" in equity.columns:
        marks = {symbol: float(equity["position_value"].iloc[-1]) / held}
    return compute_metrics(equity, fills, marks=marks)


def write_metrics(metrics: Mapping[str, Any], out_dir: str | Path) -> Path:
    """``out_dir/metrics.json`` (sorted keys, indent 2), written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    text = json.dumps(_json_safe(dict(metrics)), indent=2, sort_keys=True, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".metrics.json.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
