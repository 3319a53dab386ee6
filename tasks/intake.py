"""Step 1 — signal intake: normalise raw signals, reject bad or repeated ones."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.context import ExecutionContext
from tasks.contracts import SignalFrame
from tasks.step import StepResult, frame_of, rejections, strings
from tradpal.io import check_signal_rows

COLUMNS = list(SignalFrame.to_schema().columns)


def _normalise(raw: pd.DataFrame, ctx: ExecutionContext) -> pd.DataFrame:
    """The raw signals with every contract column present, typed and tidied (case,
    whitespace, defaults, generated ids), in the contract's column order. Built column by
    column as plain lists/arrays and made a frame once (`frame_of`): setting the columns
    on a frame one by one costs ~3 ms for one signal."""
    n = len(raw)

    def values(name: str) -> list | None:
        return raw[name].tolist() if name in raw else None

    def text(name: str, default: str | None = None) -> list[str]:
        vals = values(name)
        if vals is None:
            return [default] * n
        return [default if default is not None and _missing(v) else str(v) for v in vals]

    def number(name: str) -> np.ndarray:
        if name not in raw:
            return np.full(n, np.nan)
        col = raw[name]
        if col.dtype == np.float64:  # already numbers: nothing to convert (the frame gets its own copy)
            return col.to_numpy()
        return pd.to_numeric(col.to_numpy(), errors="coerce").astype("float64")

    ids = values("signal_id") or [None] * n
    missing = [_missing(v) for v in ids]
    first = ctx.generated_signal_ids  # ids given so far in this run: unique over its batches
    generated = iter([f"{ctx.run_id[:8]}-{first + i + 1}" for i in range(sum(missing))])
    ctx.generated_signal_ids += sum(missing)
    tif = values("time_in_force")
    trailing = values("trailing_stop")
    now = ctx.clock.now()
    if "received_at" in raw:
        received = _utc_column(raw["received_at"])
        if received.isna().any():
            received = received.fillna(now)  # unknown: now
    else:
        received = pd.DatetimeIndex([now] * n, dtype="datetime64[ns, UTC]").array
    cols = {
        "signal_id": strings([next(generated) if m else str(v).strip() for v, m in zip(ids, missing, strict=True)]),
        # a timestamp that cannot be parsed becomes NaT, rejected row by row in `intake_signals`
        "timestamp": _utc_column(raw["timestamp"]),
        "symbol": strings([v.strip().upper() for v in text("symbol")]),
        "side": strings([v.strip().lower() for v in text("side")]),
        "quantity": number("quantity"),
        "strategy": strings(text("strategy", ctx.default_strategy)),
        "order_type": strings([v.strip().lower() for v in text("order_type", "market")]),
        "limit_price": number("limit_price"),
        "stop_price": number("stop_price"),
        "reference_price": number("reference_price"),
        "time_in_force": strings([None] * n if tif is None else [None if _missing(v) else str(v).strip().upper()
                                                                 for v in tif]),
        "stop_loss": number("stop_loss"),
        "take_profit": number("take_profit"),
        "trailing_stop": np.zeros(n, dtype=bool) if trailing is None else np.array([_truthy(v) for v in trailing],
                                                                                    dtype=bool),
        "received_at": received,
    }
    return frame_of(cols)


_UTC = pd.DatetimeTZDtype("ns", "UTC")


def _utc_column(col: pd.Series):
    """A column of times as a UTC ``DatetimeArray`` (unparseable: NaT); one already in UTC
    nanoseconds as it is (parsing it again gives the same values)."""
    if col.dtype == _UTC:
        return col.array
    return _utc(col.to_numpy()).array


def _truthy(v: object) -> bool:
    """A flag as JSON, CSV or Python give it: true/1/yes (any case) is True; missing is False."""
    if _missing(v):
        return False
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes", "y")
    return bool(v)


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and v != v) or v is pd.NA or v is pd.NaT


def _utc(values: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True, errors="coerce", format="mixed")).astype(
        "datetime64[ns, UTC]")


def _fill_reference_prices(df: pd.DataFrame, ctx: ExecutionContext, keep: np.ndarray | None = None) -> pd.DataFrame:
    """``df`` with each kept signal's missing reference price filled from the last close at
    or before its time (``df`` itself when there is nothing to fill)."""
    ref = df["reference_price"].to_numpy("float64")
    ts = df["timestamp"].array.asi8
    missing = np.isnan(ref) & (ts != np.iinfo(np.int64).min)
    if keep is not None:
        missing &= keep
    if not missing.any():
        return df
    symbols = df["symbol"].to_numpy()
    filled = ref.copy()
    for symbol in dict.fromkeys(symbols[missing].tolist()):
        rows = missing & (symbols == symbol)
        filled[rows] = ctx.market.last_close_at(symbol, ts[rows])
    if np.array_equal(filled, ref, equal_nan=True):
        return df  # no close for any of them (no market data): nothing changes
    df["reference_price"] = filled
    return df


def intake_signals(raw: pd.DataFrame, ctx: ExecutionContext) -> StepResult:
    """Validate each raw signal; the good ones become a `SignalFrame`.

    Rejected (into the ledger, with the reason): malformed rows, a signal id repeated
    in the batch, and a signal id the ledger already holds (a re-delivery). The good
    signals are *claimed* in the ledger here (`claim_signals`: an insert under
    ``UNIQUE(namespace, signal_id)``), so two workers handed the same id at the same
    moment cannot both go on: the database lets exactly one insert it."""
    df = _normalise(raw, ctx)
    n = len(df)
    reasons: list[str | None] = [None] * n
    no_qty = raw["quantity"].isna().to_numpy() if "quantity" in raw else np.ones(n, dtype=bool)
    bad_ts = df["timestamp"].isna().to_numpy()
    problems = [(int(p), "timestamp", f"cannot parse timestamp {raw['timestamp'].iat[p]!r}")
                for p in bad_ts.nonzero()[0]]
    # no quantity at all is not malformed: sizing decides (method 'signal' rejects it there)
    problems += [p for p in check_signal_rows(df) if not (p[1] == "quantity" and no_qty[p[0]])]
    own = [c for c in ("time_in_force", "stop_loss", "take_profit", "trailing_stop") if c in raw]
    if own:  # the signal's own order and bracket settings (absent: nothing to check)
        problems += _order_problems(raw, df)
    for pos, col, why in sorted(problems, key=lambda p: p[0]):
        if reasons[pos] is None:
            reasons[pos] = f"{col}: {why}"
    ids = df["signal_id"].tolist()
    seen: set[str] = set()
    for pos, sid in enumerate(ids):
        if sid in seen and reasons[pos] is None:
            reasons[pos] = "duplicate signal_id in this batch"
        seen.add(sid)
    df = _fill_reference_prices(df, ctx, np.array([r is None for r in reasons], dtype=bool))
    levels = [c for c in own if c != "time_in_force"]
    for pos, col, why in (_level_problems(df, pd.Series(reasons, dtype=object), ctx) if levels else ()):
        reasons[pos] = f"{col}: {why}"
    ok = [r is None for r in reasons]
    good = df if all(ok) else df.loc[np.array(ok, dtype=bool)].reset_index(drop=True)
    # the ledger claim: whoever inserts a signal id first owns it (another run, another worker)
    if len(good):  # a new batch: the last one's sends are forgotten (its signals are no longer claimed here,
        ctx.sent_client_ids.clear()  # so one of its orders sent again is looked up first): memory stays one batch
    taken = ctx.recorder.claim_signals(good, _provenance(ctx))
    if taken:
        for pos, sid in enumerate(ids):
            if reasons[pos] is None and sid in taken:
                reasons[pos] = "signal already received (re-delivery ignored; see its first record in the ledger)"
        good = good[~good["signal_id"].isin(taken)].reset_index(drop=True)
    if levels:
        _record_levels(good, ctx)
    bad = [pos for pos, r in enumerate(reasons) if r is not None]
    rejected = rejections([ids[p] for p in bad], [reasons[p] for p in bad])
    return StepResult(good, rejected)


def _order_problems(raw: pd.DataFrame, df: pd.DataFrame) -> list[tuple[int, str, str]]:
    """The signal's own time in force and bracket levels, as given: known values, numbers."""
    from tasks.contracts import TIME_IN_FORCE

    out = []
    known = {None, *TIME_IN_FORCE}
    for pos in [i for i, v in enumerate(df["time_in_force"].tolist()) if v not in known]:
        out.append((pos, "time_in_force", f"unknown time_in_force {raw['time_in_force'].iat[pos]!r} "
                                          f"(expected {', '.join(TIME_IN_FORCE)})"))
    for col in ("stop_loss", "take_profit"):
        if col in raw:
            given = raw[col].notna().to_numpy() if hasattr(raw[col], "notna") else np.ones(len(df), dtype=bool)
            v = df[col].to_numpy()
            bad = (given & np.isnan(v)) | ~(np.isnan(v) | ((v > 0) & np.isfinite(v)))
            out += [(int(p), col, f"{col} must be a price > 0, got {_plain(raw[col].iat[p])!r}")
                    for p in np.flatnonzero(bad)]
    return out


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _level_problems(df: pd.DataFrame, reasons: pd.Series, ctx: ExecutionContext) -> list[tuple[int, str, str]]:
    """A signal's own bracket levels against its side and reference price (`risk.brackets`)."""
    from risk.brackets import signal_level_problem

    sl, tp = df["stop_loss"].to_numpy("float64"), df["take_profit"].to_numpy("float64")
    trailing = df["trailing_stop"].to_numpy(bool)
    carry = (~np.isnan(sl) | ~np.isnan(tp) | trailing) & reasons.isna().to_numpy()
    if not carry.any():
        return []
    risk = ctx.config.risk
    side, strategy, ref = df["side"].tolist(), df["strategy"].tolist(), df["reference_price"].tolist()
    out = []
    for pos in np.flatnonzero(carry).tolist():
        rule = risk.brackets.rule_for(strategy[pos]) if risk is not None else None
        problem = signal_level_problem(side[pos], None if ref[pos] != ref[pos] else ref[pos], float(sl[pos]),
                                       float(tp[pos]), bool(trailing[pos]), rule)
        if problem is not None:
            out.append((pos, *problem))
    return out


def _record_levels(good: pd.DataFrame, ctx: ExecutionContext) -> None:
    """Signals that carry their own bracket levels: kept in ``ctx.signal_brackets`` for the
    monitoring step. The step's record writes them to the audit log (``bracket.requested``,
    `requested_levels`) with the signals, before any order exists: a restarted process
    finds them there."""
    from risk.brackets import signal_spec

    sl, tp = good["stop_loss"].to_numpy("float64"), good["take_profit"].to_numpy("float64")
    trailing, ids = good["trailing_stop"].to_numpy(bool), good["signal_id"].tolist()
    for pos in np.flatnonzero(~np.isnan(sl) | ~np.isnan(tp) | trailing).tolist():
        ctx.signal_brackets[ids[pos]] = signal_spec(float(sl[pos]), float(tp[pos]), bool(trailing[pos]))


def requested_levels(signals: pd.DataFrame, namespace: str) -> list[dict]:
    """``bracket.requested`` audit rows for the signals of a `SignalFrame` that carry their
    own bracket levels (none: an empty list, at the cost of three column reads)."""
    from risk.brackets import signal_spec

    if "stop_loss" not in signals or not len(signals):
        return []
    carry = ~np.isnan(signals["stop_loss"].to_numpy("float64")) | ~np.isnan(
        signals["take_profit"].to_numpy("float64")) | signals["trailing_stop"].to_numpy(bool)
    if not carry.any():
        return []
    return [{"event": "bracket.requested", "entity": "signal", "entity_id": r["signal_id"],
             "payload": {**signal_spec(r["stop_loss"], r["take_profit"], r["trailing_stop"]), "namespace": namespace,
                         "source": "signal"}}
            for r in signals.loc[carry].to_dict("records")]


def _provenance(ctx: ExecutionContext):
    from tasks.pipeline import provenance  # (pipeline imports this module)

    return provenance(ctx)
