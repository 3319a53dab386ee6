"""Step 1 — signal intake: normalise raw signals, reject bad or repeated ones."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.context import ExecutionContext
from tasks.contracts import SignalFrame
from tasks.step import StepResult, rejections
from tradpal.io import check_signal_rows

COLUMNS = list(SignalFrame.to_schema().columns)


def _normalise(raw: pd.DataFrame, ctx: ExecutionContext) -> pd.DataFrame:
    """The raw signals with every contract column present, typed and tidied (case,
    whitespace, defaults, generated ids). Built column by column as plain lists and made a
    frame once: setting eleven columns on a frame one by one costs ~3 ms for one signal."""
    n = len(raw)

    def values(name: str) -> list | None:
        return raw[name].tolist() if name in raw else None

    def text(name: str, default: str | None = None) -> list[str]:
        vals = values(name)
        if vals is None:
            return [default] * n
        return [default if default is not None and _missing(v) else str(v) for v in vals]

    ids = values("signal_id") or [None] * n
    missing = [_missing(v) for v in ids]
    first = ctx.generated_signal_ids  # ids given so far in this run: unique over its batches
    generated = iter([f"{ctx.run_id[:8]}-{first + i + 1}" for i in range(sum(missing))])
    ctx.generated_signal_ids += sum(missing)
    cols: dict[str, object] = {
        "signal_id": [next(generated) if m else str(v).strip() for v, m in zip(ids, missing, strict=True)],
        # a timestamp that cannot be parsed becomes NaT, rejected row by row in `intake_signals`
        "timestamp": _utc(raw["timestamp"].to_numpy()),
        "symbol": [v.strip().upper() for v in text("symbol")],
        "side": [v.strip().lower() for v in text("side")],
        "strategy": text("strategy", ctx.default_strategy),
        "order_type": [v.strip().lower() for v in text("order_type", "market")],
    }
    for col in ("quantity", "limit_price", "stop_price", "reference_price", "stop_loss", "take_profit"):
        cols[col] = (pd.to_numeric(raw[col].to_numpy(), errors="coerce").astype("float64") if col in raw
                     else np.full(n, np.nan))
    tif = values("time_in_force")
    cols["time_in_force"] = [None] * n if tif is None else [None if _missing(v) else str(v).strip().upper()
                                                            for v in tif]
    trailing = values("trailing_stop")
    cols["trailing_stop"] = np.zeros(n, dtype=bool) if trailing is None else np.array(
        [_truthy(v) for v in trailing], dtype=bool)
    now = ctx.clock.now()
    received = _utc(raw["received_at"].to_numpy()) if "received_at" in raw else None
    cols["received_at"] = (pd.DatetimeIndex([now] * n, dtype="datetime64[ns, UTC]") if received is None
                           else received.fillna(now))  # unknown: now
    frame = pd.DataFrame(cols, index=pd.RangeIndex(n))
    if n == 0:  # empty lists come out float64
        frame = frame.astype({c: object for c in ("signal_id", "symbol", "side", "strategy", "order_type",
                                                  "time_in_force")})
    return frame


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


def _fill_reference_prices(df: pd.DataFrame, ctx: ExecutionContext, keep: np.ndarray | None = None) -> None:
    missing = df["reference_price"].isna() & (True if keep is None else keep) & df["timestamp"].notna()
    if not missing.any():
        return
    ts = df["timestamp"].to_numpy("datetime64[ns]").view("int64")
    for symbol in df.loc[missing, "symbol"].unique():
        rows = missing & (df["symbol"] == symbol)
        df.loc[rows, "reference_price"] = ctx.market.last_close_at(symbol, ts[rows.to_numpy()])


def intake_signals(raw: pd.DataFrame, ctx: ExecutionContext) -> StepResult:
    """Validate each raw signal; the good ones become a `SignalFrame`.

    Rejected (into the ledger, with the reason): malformed rows, a signal id repeated
    in the batch, and a signal id the ledger already holds (a re-delivery). The good
    signals are *claimed* in the ledger here (`claim_signals`: an insert under
    ``UNIQUE(namespace, signal_id)``), so two workers handed the same id at the same
    moment cannot both go on: the database lets exactly one insert it."""
    df = _normalise(raw, ctx)
    reasons = pd.Series([None] * len(df), dtype=object)
    no_qty = raw["quantity"].isna().to_numpy() if "quantity" in raw else np.ones(len(df), dtype=bool)
    bad_ts = df["timestamp"].isna().to_numpy()
    problems = [(int(p), "timestamp", f"cannot parse timestamp {raw['timestamp'].iat[p]!r}")
                for p in bad_ts.nonzero()[0]]
    # no quantity at all is not malformed: sizing decides (method 'signal' rejects it there)
    problems += [p for p in check_signal_rows(df) if not (p[1] == "quantity" and no_qty[p[0]])]
    own = [c for c in ("time_in_force", "stop_loss", "take_profit", "trailing_stop") if c in raw]
    if own:  # the signal's own order and bracket settings (absent: nothing to check)
        problems += _order_problems(raw, df)
    for pos, col, why in sorted(problems, key=lambda p: p[0]):
        if reasons.iat[pos] is None:
            reasons.iat[pos] = f"{col}: {why}"
    dup = df["signal_id"].duplicated() & reasons.isna()
    reasons[dup] = "duplicate signal_id in this batch"
    _fill_reference_prices(df, ctx, reasons.isna().to_numpy())
    levels = [c for c in own if c != "time_in_force"]
    for pos, col, why in (_level_problems(df, reasons, ctx) if levels else ()):
        reasons.iat[pos] = f"{col}: {why}"
    good = df.loc[reasons.isna()].reset_index(drop=True)
    # the ledger claim: whoever inserts a signal id first owns it (another run, another worker)
    taken = ctx.recorder.claim_signals(good[COLUMNS], _provenance(ctx))
    again = df["signal_id"].isin(taken) & reasons.isna()
    reasons[again] = "signal already received (re-delivery ignored; see its first record in the ledger)"
    good = good[~good["signal_id"].isin(taken)].reset_index(drop=True)
    if levels:
        _record_levels(good, ctx)
    bad = reasons.notna().to_numpy()
    rejected = rejections(df.loc[bad, "signal_id"], reasons[bad])
    return StepResult(good[COLUMNS], rejected)


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
