"""The Pandera contracts between every two steps, in one module.

    raw ─▶ 1 intake ─▶ SignalFrame ─▶ 2 sizing ─▶ SizedFrame ─▶ 3 order creation ─▶ OrderFrame
       ─▶ 4 pre-checks ─▶ CheckedFrame ─▶ 5 placement ─▶ PlacedFrame ─▶ 6 monitoring ─▶ ExecutionFrame
       ─▶ 7 positions ─▶ PositionFrame ─▶ 8 analysis ─▶ ExecutionReport

Every model is strict (an unknown column is a violation) and does not coerce. Each
boundary is validated once, on the producing step's way out. `validate` turns a
Pandera failure into a `ContractViolation` that names the step, the column and the
offending rows.
"""

from __future__ import annotations

import functools
from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandas.api.types import infer_dtype
from pandera.errors import SchemaError, SchemaErrors
from pandera.typing import Series

UTC = Annotated[pd.DatetimeTZDtype, "ns", "UTC"]
SIDES = ["buy", "sell"]
ORDER_TYPES = ["market", "limit", "stop", "stop_limit"]
TIME_IN_FORCE = ["GTC", "IOC", "FOK"]
EXEC_TYPES = ["PARTIAL_FILL", "FILL", "CANCELED", "REJECTED", "EXPIRED"]
ORDER_STATUSES = ["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED"]


class ContractViolation(ValueError):
    """A frame broke the contract at a step boundary: a bug in the producing step or
    bad data that slipped past intake. The run stops; nothing of that step is written."""

    def __init__(self, step: str, contract: str, column: str | None, check: str, rows: list[int]) -> None:
        shown = ", ".join(str(r) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
        where = f"column '{column}'" if column else "frame"
        super().__init__(
            f"step '{step}' broke contract {contract}: {where} failed {check} (rows: {shown or 'n/a'})"
        )
        self.step, self.contract, self.column, self.check, self.rows = step, contract, column, check, rows


class SignalFrame(pa.DataFrameModel):
    signal_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1, "max_value": 128})
    timestamp: Series[UTC]
    symbol: Series[str] = pa.Field(str_matches=r"^[A-Z0-9._-]+/[A-Z0-9._-]+(:[A-Z0-9]+)?$")
    side: Series[str] = pa.Field(isin=SIDES)
    quantity: Series[float] = pa.Field(gt=0, nullable=True)
    strategy: Series[str]
    order_type: Series[str] = pa.Field(isin=ORDER_TYPES)
    limit_price: Series[float] = pa.Field(gt=0, nullable=True)
    stop_price: Series[float] = pa.Field(gt=0, nullable=True)
    reference_price: Series[float] = pa.Field(gt=0, nullable=True)
    received_at: Series[UTC]

    class Config:
        strict = True
        coerce = False


class SizedFrame(SignalFrame):
    quantity: Series[float] = pa.Field(gt=0)
    sizing_method: Series[str]
    sizing_detail: Series[str]

    class Config:
        strict = True
        coerce = False


class OrderFrame(pa.DataFrameModel):
    signal_id: Series[str]
    client_order_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1, "max_value": 36})
    symbol: Series[str]
    side: Series[str] = pa.Field(isin=SIDES)
    order_type: Series[str] = pa.Field(isin=ORDER_TYPES)
    quantity: Series[float] = pa.Field(gt=0)
    price: Series[float] = pa.Field(gt=0, nullable=True)
    stop_price: Series[float] = pa.Field(gt=0, nullable=True)
    time_in_force: Series[str] = pa.Field(isin=TIME_IN_FORCE)
    reference_price: Series[float] = pa.Field(gt=0, nullable=True)
    strategy: Series[str]
    signal_time: Series[UTC]
    created_at: Series[UTC]

    class Config:
        strict = True
        coerce = False

    @pa.dataframe_check(error="limit and stop_limit orders need a price")
    def _limit_has_price(cls, df: pd.DataFrame) -> pd.Series:
        needs = df["order_type"].isin(["limit", "stop_limit"])
        return ~needs | df["price"].notna()

    @pa.dataframe_check(error="stop and stop_limit orders need a stop_price")
    def _stop_has_stop(cls, df: pd.DataFrame) -> pd.Series:
        needs = df["order_type"].isin(["stop", "stop_limit"])
        return ~needs | df["stop_price"].notna()


class CheckedFrame(OrderFrame):
    checked_at: Series[UTC]

    class Config:
        strict = True
        coerce = False


class PlacedFrame(CheckedFrame):
    broker_order_id: Series[str]
    status: Series[str] = pa.Field(isin=ORDER_STATUSES)
    placed_at: Series[UTC]
    acked_at: Series[UTC]

    class Config:
        strict = True
        coerce = False


class ExecutionFrame(pa.DataFrameModel):
    """One row per execution report (as in FIX): a fill (last_qty > 0) or a terminal
    state without a fill (CANCELED / REJECTED / EXPIRED)."""

    client_order_id: Series[str]
    broker_order_id: Series[str]
    signal_id: Series[str]
    symbol: Series[str]
    side: Series[str] = pa.Field(isin=SIDES)
    strategy: Series[str]
    exec_type: Series[str] = pa.Field(isin=EXEC_TYPES)
    status: Series[str] = pa.Field(isin=ORDER_STATUSES)
    timestamp: Series[UTC]
    trade_id: Series[str] = pa.Field(nullable=True)
    last_qty: Series[float] = pa.Field(ge=0)
    last_px: Series[float] = pa.Field(gt=0, nullable=True)
    last_fee: Series[float] = pa.Field(ge=0)
    fee_currency: Series[str] = pa.Field(nullable=True)
    is_maker: Series[bool]
    model_price: Series[float] = pa.Field(gt=0, nullable=True)
    order_qty: Series[float] = pa.Field(gt=0)
    cum_qty: Series[float] = pa.Field(ge=0)
    avg_px: Series[float] = pa.Field(gt=0, nullable=True)
    cum_fee: Series[float] = pa.Field(ge=0)
    reference_price: Series[float] = pa.Field(gt=0, nullable=True)
    signal_time: Series[UTC]
    placed_at: Series[UTC]
    reason: Series[str] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = False

    @pa.dataframe_check(error="a fill needs last_px and a trade_id")
    def _fill_has_price(cls, df: pd.DataFrame) -> pd.Series:
        fill = df["last_qty"] > 0
        return ~fill | (df["last_px"].notna() & df["trade_id"].notna())

    @pa.dataframe_check(error="cum_qty exceeds order_qty")
    def _not_overfilled(cls, df: pd.DataFrame) -> pd.Series:
        return df["cum_qty"] <= df["order_qty"] * (1 + 1e-9)


class PositionFrame(ExecutionFrame):
    """Execution reports with the book after each: position, cash and realised P&L."""

    position_after: Series[float] = pa.Field(ge=-1e-9)
    cash_after: Series[float] = pa.Field(ge=-1e-9)
    realized_pnl: Series[float]

    class Config:
        strict = True
        coerce = False


class ExecutionReport(pa.DataFrameModel):
    """Per execution report: cost analysis (slippage against the signal's reference
    price, fees) and latency from signal to report."""

    client_order_id: Series[str]
    signal_id: Series[str]
    symbol: Series[str]
    side: Series[str] = pa.Field(isin=SIDES)
    strategy: Series[str]
    exec_type: Series[str] = pa.Field(isin=EXEC_TYPES)
    timestamp: Series[UTC]
    quantity: Series[float] = pa.Field(ge=0)
    price: Series[float] = pa.Field(gt=0, nullable=True)
    notional: Series[float] = pa.Field(ge=0)
    fee: Series[float] = pa.Field(ge=0)
    reference_price: Series[float] = pa.Field(gt=0, nullable=True)
    slippage_bps: Series[float] = pa.Field(nullable=True)
    latency_s: Series[float] = pa.Field(ge=0)
    realized_pnl: Series[float]

    class Config:
        strict = True
        coerce = False


CONTRACTS: dict[str, type[pa.DataFrameModel]] = {
    m.__name__: m
    for m in (SignalFrame, SizedFrame, OrderFrame, CheckedFrame, PlacedFrame, ExecutionFrame, PositionFrame, ExecutionReport)
}


@functools.cache
def _plan(contract: type[pa.DataFrameModel]) -> tuple[pa.DataFrameSchema, tuple[str, ...]]:
    """The contract's schema with its ``str`` columns' dtype check taken out (Pandera checks
    each element's type in Python, ~0.45 ms per column per call), and those columns, whose
    type `validate` checks itself in one vectorised pass. Every other check is Pandera's."""
    schema = contract.to_schema()
    str_cols = tuple(n for n, col in schema.columns.items() if str(col.dtype) == "str")
    return schema.update_columns({n: {"dtype": None} for n in str_cols}), str_cols


def validate(frame: pd.DataFrame, contract: type[pa.DataFrameModel], *, step: str) -> pd.DataFrame:
    """Validate ``frame`` against ``contract``; raise `ContractViolation` naming the step."""
    schema, str_cols = _plan(contract)
    try:
        out = schema.validate(frame, lazy=False, inplace=True)  # no copy: the frame is ours
    except (SchemaError, SchemaErrors) as exc:
        raise _violation(exc, contract, step) from None
    for name in str_cols:
        col = out[name]
        kind = infer_dtype(col, skipna=True)
        if col.dtype != object or kind not in ("string", "empty"):
            bad = [int(i) for i, v in enumerate(col) if not (isinstance(v, str) or v is None or v != v)]
            raise ContractViolation(step, contract.__name__, name, f"dtype str (found {kind})", bad)
    return out


def _violation(exc: SchemaError | SchemaErrors, contract: type[pa.DataFrameModel], step: str) -> ContractViolation:
    err = exc.schema_errors[0] if isinstance(exc, SchemaErrors) else exc
    column = getattr(err.schema, "name", None) if err.schema is not None else None
    rows: list[int] = []
    cases = err.failure_cases
    if isinstance(cases, pd.DataFrame) and "index" in cases:
        # a frame-level check lists each failing row once per column: report each row once
        rows = sorted({int(i) for i in cases["index"].dropna().tolist() if isinstance(i, int | float)})
    check = str(err.check) if err.check is not None else str(err).splitlines()[0]
    if column in (contract.__name__, None) and getattr(err.check, "error", None):
        check, column = err.check.error, None  # a frame-level check: its own message, not the failing values
    elif column in (contract.__name__, None):
        text = str(err).splitlines()[0].split(". Columns in dataframe")[0]
        if " not in DataFrameSchema" in text:
            text = text.split(" not in DataFrameSchema")[0] + " is not in the contract (strict)"
        check = text
        column = None
    return ContractViolation(step, contract.__name__, column, check, rows)
