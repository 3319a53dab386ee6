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
    df = raw.reset_index(drop=True).copy()
    n = len(df)
    ids = df["signal_id"] if "signal_id" in df else pd.Series([None] * n, dtype=object)
    missing = ids.isna().to_numpy()
    first = ctx.generated_signal_ids  # ids given so far in this run: unique over its batches
    generated = iter([f"{ctx.run_id[:8]}-{first + i + 1}" for i in range(int(missing.sum()))])
    ctx.generated_signal_ids += int(missing.sum())
    df["signal_id"] = pd.Series([next(generated) if m else str(v).strip() for v, m in zip(ids, missing, strict=True)],
                                index=df.index, dtype=object)
    # a timestamp that cannot be parsed becomes NaT, rejected row by row in `intake_signals`
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, errors="coerce", format="mixed").astype(
        "datetime64[ns, UTC]")
    df["symbol"] = df["symbol"].astype(str).str.strip().str.upper()
    df["side"] = df["side"].astype(str).str.strip().str.lower()
    df["strategy"] = df["strategy"].fillna(ctx.default_strategy).astype(str) if "strategy" in df else ctx.default_strategy
    df["order_type"] = (df["order_type"].fillna("market").astype(str).str.strip().str.lower()
                        if "order_type" in df else "market")
    for col in ("quantity", "limit_price", "stop_price", "reference_price"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64") if col in df else np.nan
    if "received_at" in df:
        received = pd.to_datetime(df["received_at"], utc=True, errors="coerce", format="mixed")
        df["received_at"] = received.fillna(ctx.clock.now()).astype("datetime64[ns, UTC]")  # unknown: now
    else:
        df["received_at"] = pd.Series([ctx.clock.now()] * n, dtype="datetime64[ns, UTC]")
    return df


def _fill_reference_prices(df: pd.DataFrame, ctx: ExecutionContext) -> None:
    missing = df["reference_price"].isna()
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
    for pos, col, why in sorted(problems, key=lambda p: p[0]):
        if reasons.iat[pos] is None:
            reasons.iat[pos] = f"{col}: {why}"
    dup = df["signal_id"].duplicated() & reasons.isna()
    reasons[dup] = "duplicate signal_id in this batch"
    good = df.loc[reasons.isna()].reset_index(drop=True)
    _fill_reference_prices(good, ctx)
    # the ledger claim: whoever inserts a signal id first owns it (another run, another worker)
    taken = ctx.recorder.claim_signals(good[COLUMNS], _provenance(ctx))
    again = df["signal_id"].isin(taken) & reasons.isna()
    reasons[again] = "signal already received (re-delivery ignored; see its first record in the ledger)"
    good = good[~good["signal_id"].isin(taken)].reset_index(drop=True)
    bad = reasons.notna().to_numpy()
    rejected = rejections(df.loc[bad, "signal_id"], reasons[bad])
    return StepResult(good[COLUMNS], rejected)


def _provenance(ctx: ExecutionContext):
    from tasks.pipeline import provenance  # (pipeline imports this module)

    return provenance(ctx)
