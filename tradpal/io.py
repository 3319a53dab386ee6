"""Loading and checking the replay inputs (OHLCV bars, signals) from CSV or Parquet.

Every problem is an `InputError` naming the file, the row (1-based data row; the
header is line 1, so row N is line N+1 of a CSV) and the column.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from tradpal.errors import InputError

OHLCV_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
SIGNAL_REQUIRED = ["timestamp", "symbol", "side", "quantity"]
SIGNAL_OPTIONAL = ["signal_id", "strategy", "order_type", "limit_price", "stop_price", "reference_price",
                   "time_in_force", "stop_loss", "take_profit", "trailing_stop"]  # the last four: tasks.intake
ORDER_TYPES = {"market", "limit", "stop", "stop_limit"}
SYMBOL_RE = re.compile(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(:[A-Za-z0-9]+)?")
SMALL = 64  # rows: below this, `check_signal_rows` checks typed rows in plain Python


def _where(path: Path, row: int, column: str | None = None) -> str:
    col = f", column '{column}'" if column else ""
    return f"{path}: row {row + 1}{col}"


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as strings/objects (CSV) without guessing types."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(p)
        return pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{p}: cannot read: {first}") from None


def _require_columns(df: pd.DataFrame, path: Path, required: list[str], optional: list[str]) -> None:
    cols = [str(c).strip() for c in df.columns]
    df.columns = cols
    missing = [c for c in required if c not in cols]
    if missing:
        raise InputError(f"{path}: missing column '{missing[0]}' (header must have {', '.join(required)})")
    unknown = [c for c in cols if c not in required and c not in optional]
    if unknown:
        raise InputError(f"{path}: unknown column '{unknown[0]}' (allowed: {', '.join(required + optional)})")


def parse_timestamps(values: pd.Series, path: Path, column: str = "timestamp") -> pd.Series:
    """ISO-8601 (UTC if no zone) or integer epoch milliseconds -> datetime64[ns, UTC]."""
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = pd.to_datetime(values, utc=True)
    else:
        text = values.astype("string").str.strip()
        is_int = text.str.fullmatch(r"-?\d+").fillna(False)
        ts = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
        if is_int.all():
            ts = pd.to_datetime(text.astype("int64"), unit="ms", utc=True)
        else:
            ts = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = ts.isna().to_numpy().nonzero()[0]
    if len(bad):
        row = int(bad[0])
        raise InputError(f"{_where(path, row, column)}: cannot parse timestamp {values.iloc[row]!r} "
                         "(expected ISO-8601 UTC or epoch milliseconds)")
    return ts.astype("datetime64[ns, UTC]")


def parse_numbers(df: pd.DataFrame, path: Path, columns: list[str], *, required: bool) -> None:
    for col in columns:
        if col not in df:
            continue
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce").astype("float64")
        bad = (num.isna() & raw.notna()) | ~np.isfinite(num.fillna(0.0))
        if required:
            bad |= num.isna()
        idx = bad.to_numpy().nonzero()[0]
        if len(idx):
            row = int(idx[0])
            raise InputError(f"{_where(path, row, col)}: not a number: {raw.iloc[row]!r}")
        df[col] = num


def _first(mask: pd.Series | np.ndarray) -> int | None:
    idx = np.asarray(mask).nonzero()[0]
    return int(idx[0]) if len(idx) else None


def load_ohlcv(path: str | Path) -> pd.DataFrame:
    """OHLCV bars with strictly increasing timestamps and consistent prices."""
    p = Path(path)
    df = read_table(p)
    _require_columns(df, p, OHLCV_COLUMNS, [])
    if df.empty:
        raise InputError(f"{p}: no bars")
    df = df[OHLCV_COLUMNS].reset_index(drop=True)
    df["timestamp"] = parse_timestamps(df["timestamp"], p)
    parse_numbers(df, p, OHLCV_COLUMNS[1:], required=True)
    ts = df["timestamp"].to_numpy("datetime64[ns]")
    if (row := _first(np.diff(ts) <= np.timedelta64(0))) is not None:
        kind = "duplicate" if ts[row + 1] == ts[row] else "unsorted"
        raise InputError(f"{_where(p, row + 1, 'timestamp')}: {kind} timestamp {df['timestamp'].iloc[row + 1]} "
                         f"(after {df['timestamp'].iloc[row]}); bars must be strictly increasing")
    o, h, low, c, v = (df[k].to_numpy() for k in OHLCV_COLUMNS[1:])
    checks = [
        ("low", low <= 0, "low must be > 0"),
        ("high", h < np.maximum(o, c), "high is below max(open, close)"),
        ("low", low > np.minimum(o, c), "low is above min(open, close)"),
        ("volume", v < 0, "volume must be >= 0"),
    ]
    for col, mask, what in checks:
        if (row := _first(mask)) is not None:
            raise InputError(f"{_where(p, row, col)}: {what} (open={o[row]}, high={h[row]}, low={low[row]}, "
                             f"close={c[row]}, volume={v[row]})")
    return df


def load_signals(path: str | Path, *, default_symbol: str | None = None) -> pd.DataFrame:
    """Signals with every row checked; raises on the first bad row (see `check_signal_rows`)."""
    p = Path(path)
    df = read_table(p)
    _require_columns(df, p, SIGNAL_REQUIRED, SIGNAL_OPTIONAL)
    df = df.reset_index(drop=True)
    df["timestamp"] = parse_timestamps(df["timestamp"], p)
    parse_numbers(df, p, ["quantity"], required=True)
    parse_numbers(df, p, ["limit_price", "stop_price", "reference_price", "stop_loss", "take_profit"], required=False)
    problems = check_signal_rows(df)
    if problems:
        row, col, why = problems[0]
        raise InputError(f"{_where(p, row, col)}: {why}")
    ts = df["timestamp"].to_numpy("datetime64[ns]")
    if (row := _first(np.diff(ts) < np.timedelta64(0))) is not None:
        raise InputError(f"{_where(p, row + 1, 'timestamp')}: unsorted timestamp {df['timestamp'].iloc[row + 1]} "
                         f"(after {df['timestamp'].iloc[row]}); signals must be in time order")
    if "signal_id" in df:
        dup = df["signal_id"].duplicated()
        if (row := _first(dup)) is not None:
            raise InputError(f"{_where(p, row, 'signal_id')}: duplicate signal_id {df['signal_id'].iloc[row]!r}")
    return df


def ohlcv_gaps(bars: pd.DataFrame) -> dict | None:
    """Missing bars: where two consecutive bars are further apart than 1.5x the usual
    spacing (the median). None when there is none; else the count, the bars missing in
    all, and the largest gap with the row it ends at. Gaps are reported, not refused:
    the market-data gate (`tradpal.quality`) decides what is too large to trade on."""
    ts = bars["timestamp"].to_numpy("datetime64[ns]").view("int64")
    if len(ts) < 3:
        return None
    steps = np.diff(ts)
    spacing = int(np.median(steps))
    gaps = steps > 1.5 * spacing
    if not gaps.any():
        return None
    largest = int(np.argmax(steps))
    return {"gaps": int(gaps.sum()), "missing_bars": int((np.rint(steps[gaps] / spacing) - 1).sum()),
            "bar": pd.Timedelta(spacing, "ns"), "largest": pd.Timedelta(int(steps[largest]), "ns"),
            "largest_row": largest + 1, "largest_at": pd.Timestamp(int(ts[largest + 1]), tz="UTC")}


def span(td: pd.Timedelta) -> str:
    """A duration for people: ``5m``, ``1h 05m``, ``2d 3h``, ``30s``."""
    secs = int(td.total_seconds())
    d, rem = divmod(secs, 86_400)
    h, rem = divmod(rem, 3_600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h}h" if h else f"{d}d"
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m" if m and not sec else (f"{m}m {sec:02d}s" if m else f"{sec}s")


def gap_note(path: str | Path, gaps: dict) -> str:
    """One line for the user: ``note: FILE: 3 gaps (12 missing 5m bars); largest 1h 05m, before row 812 (...)``."""
    return (f"note: {path}: {gaps['gaps']} gap(s) in the bars ({gaps['missing_bars']} missing {span(gaps['bar'])} "
            f"bars); the largest is {span(gaps['largest'])}, before row {gaps['largest_row']} "
            f"({gaps['largest_at']:%Y-%m-%d %H:%M} UTC)")


def check_signal_rows(df: pd.DataFrame) -> list[tuple[int, str, str]]:
    """Row-level problems in a signal frame: (row position, column, reason), in row order.

    Shared by the file loader (which stops at the first) and the intake step (which
    rejects each bad row into the ledger and keeps the rest)."""
    if len(df) <= SMALL and (quick := _check_small(df)) is not None:
        return quick
    problems: list[tuple[int, str, str]] = []

    def flag(mask: pd.Series, col: str, why) -> None:
        for pos in np.asarray(mask.fillna(True) if hasattr(mask, "fillna") else mask).nonzero()[0]:
            problems.append((int(pos), col, why(int(pos)) if callable(why) else why))

    side = df["side"].astype("string").str.strip().str.lower()
    flag(~side.isin(["buy", "sell"]), "side", lambda r: f"unknown side {_plain(df['side'].iloc[r])!r} (expected buy or sell)")
    qty = pd.to_numeric(df["quantity"], errors="coerce")
    flag(~(qty > 0), "quantity", lambda r: f"quantity must be a number > 0, got {_plain(df['quantity'].iloc[r])!r}")
    sym = df["symbol"].astype("string").str.strip()
    flag(~sym.str.fullmatch(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(:[A-Za-z0-9]+)?").fillna(False), "symbol",
         lambda r: f"symbol must look like BASE/QUOTE, got {_plain(df['symbol'].iloc[r])!r}")
    if "order_type" in df:
        ot = df["order_type"].astype("string").str.strip().str.lower().fillna("market")
        flag(~ot.isin(list(ORDER_TYPES)), "order_type",
             lambda r: f"unknown order_type {_plain(df['order_type'].iloc[r])!r} (expected {', '.join(sorted(ORDER_TYPES))})")
        for col, kinds in (("limit_price", ("limit", "stop_limit")), ("stop_price", ("stop", "stop_limit"))):
            price = pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series(np.nan, index=df.index)
            flag(ot.isin(kinds) & ~(price > 0), col, lambda r, c=col: f"{ot.iloc[r]} order needs {c} > 0")
    for col in ("limit_price", "stop_price", "reference_price"):
        if col in df:
            price = pd.to_numeric(df[col], errors="coerce")
            flag(price.notna() & ~(price > 0), col, lambda r, c=col: f"{c} must be > 0, got {_plain(df[c].iloc[r])!r}")
    if "signal_id" in df:
        sid = df["signal_id"].astype("string").str.strip()
        flag(sid.isna() | (sid.str.len() == 0) | (sid.str.len() > 128), "signal_id",
             "signal_id must be 1 to 128 characters")
    problems.sort(key=lambda p: p[0])
    return problems


def _plain(v):
    """A numpy scalar as the Python value (messages show ``-1.0``, not ``np.float64(-1.0)``)."""
    return v.item() if isinstance(v, np.generic) else v


_CHECKED = ("side", "quantity", "symbol", "order_type", "limit_price", "stop_price", "reference_price", "signal_id")


def check_signal_record(row: dict) -> list[tuple[int, str, str]] | None:
    """`check_signal_rows` for one signal as a dict (its keys are the frame's columns),
    without building a frame; None when a value is not yet of its type (then build the
    one-row frame and ask `check_signal_rows`)."""
    return _check_columns({c: [row.get(c)] for c in _CHECKED}, row.keys(), 1)


def _check_small(df: pd.DataFrame) -> list[tuple[int, str, str]] | None:
    """`check_signal_rows` for a few rows whose values already have their types (strings,
    floats: what the intake step and the HTTP intake hand over), in plain Python, same
    verdicts and messages; None when a value is of another type (the vectorised path then)."""
    n = len(df)
    absent = [None] * n
    return _check_columns({c: (df[c].tolist() if c in df else absent) for c in _CHECKED}, df.columns, n)


def _check_columns(cols: dict[str, list], df, n: int) -> list[tuple[int, str, str]] | None:
    """The plain-Python rules over ``cols`` (column -> values); ``df``: the columns present."""
    for c in ("side", "symbol", "order_type", "signal_id"):
        if not all(type(v) is str or (v is None and (c not in df or c in ("order_type",))) for v in cols[c]):
            return None
    for c in ("quantity", "limit_price", "stop_price", "reference_price"):
        if not all(type(v) is float or (v is None and c not in df) for v in cols[c]):
            return None
    problems: list[tuple[int, str, str]] = []
    for r in range(n):
        side, qty, sym = cols["side"][r], cols["quantity"][r], cols["symbol"][r]
        if side.strip().lower() not in ("buy", "sell"):
            problems.append((r, "side", f"unknown side {side!r} (expected buy or sell)"))
        if not qty > 0:
            problems.append((r, "quantity", f"quantity must be a number > 0, got {qty!r}"))
        if SYMBOL_RE.fullmatch(sym.strip()) is None:
            problems.append((r, "symbol", f"symbol must look like BASE/QUOTE, got {sym!r}"))
        if "order_type" in df:
            raw = cols["order_type"][r]
            ot = "market" if raw is None else raw.strip().lower()
            if ot not in ORDER_TYPES:
                problems.append((r, "order_type", f"unknown order_type {raw!r} (expected "
                                                  f"{', '.join(sorted(ORDER_TYPES))})"))
            for col, kinds in (("limit_price", ("limit", "stop_limit")), ("stop_price", ("stop", "stop_limit"))):
                price = cols[col][r]
                if ot in kinds and not (price is not None and price > 0):
                    problems.append((r, col, f"{ot} order needs {col} > 0"))
        for col in ("limit_price", "stop_price", "reference_price"):
            price = cols[col][r]
            if col in df and price == price and not price > 0:
                problems.append((r, col, f"{col} must be > 0, got {price!r}"))
        if "signal_id" in df and not 0 < len(cols["signal_id"][r].strip()) <= 128:
            problems.append((r, "signal_id", "signal_id must be 1 to 128 characters"))
    problems.sort(key=lambda p: p[0])
    return problems
