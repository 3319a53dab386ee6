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
import os
import re
from typing import Annotated

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandas.api.types import infer_dtype
from pandera.errors import SchemaError, SchemaErrors
from pandera.typing import Series

from tasks.step import column_arrays


def _pandas_only_typing() -> None:
    """Building a model, Pandera probes for Dask types by importing ``dask.dataframe``
    (1-5 s here) — installed only for the replay fan-out (`prefect-dask`). The contracts
    are pandas frames, so Pandera is told Dask typing is absent, unless something already
    imported it (a Dask worker), in which case the probe costs nothing anyway."""
    import sys
    import types

    if "pandera.typing.dask" not in sys.modules and "dask.dataframe" not in sys.modules:
        stub = types.ModuleType("pandera.typing.dask", "Dask typing disabled by tasks.contracts (pandas-only)")
        stub.DASK_INSTALLED = False
        sys.modules["pandera.typing.dask"] = stub


_pandas_only_typing()

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
    # the signal's own order and bracket settings (None / NaN / False: the configuration's)
    time_in_force: Series[str] = pa.Field(isin=TIME_IN_FORCE, nullable=True)
    stop_loss: Series[float] = pa.Field(gt=0, nullable=True)  # an absolute price
    take_profit: Series[float] = pa.Field(gt=0, nullable=True)  # an absolute price
    trailing_stop: Series[bool]
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


# ---------------------------------------------------------------------------------------
# The fast path. Pandera walks each column through a dozen Python layers: ~2.5 ms per
# boundary on a one-row frame, 19 ms of a live signal's eight steps. `_compile` turns the
# same Pandera schema into a few numpy/Python predicates per column, evaluated in one pass.
# It only ever says "passes" when every check of the schema passes (it is stricter where in
# doubt: NA in a frame check's output, an unknown check or dtype); anything else falls back
# to Pandera itself, which then decides and produces the error. tests/tasks/test_contracts.py
# checks the two agree, and TRADPAL_CONTRACTS=pandera turns the fast path off.
# ---------------------------------------------------------------------------------------

SMALL = 64  # up to this many rows, plain Python over the values beats pandas' vector calls


def _column_check(name: str, col, pandas_dtype, is_str: bool):
    """One column's predicate ``(array) -> bool`` (True: every check passes), or None if
    the column has a check the fast path does not know."""
    preds = []
    for check in col.checks:
        stats = check.statistics
        if not check.ignore_na or check.element_wise or check.groups is not None:
            return None
        if check.name == "greater_than":
            preds.append(("gt", stats["min_value"]))
        elif check.name == "greater_than_or_equal_to":
            preds.append(("ge", stats["min_value"]))
        elif check.name == "isin":
            preds.append(("isin", frozenset(stats["allowed_values"])))
        elif check.name == "str_length" and stats.get("exact_value") is None:
            preds.append(("len", (stats.get("min_value"), stats.get("max_value"))))
        elif check.name == "str_matches":
            preds.append(("match", re.compile(stats["pattern"]) if isinstance(stats["pattern"], str) else stats["pattern"]))
        else:
            return None
    nullable, unique = col.nullable, col.unique

    if not is_str:
        kind = pandas_dtype.kind

        trivial = not preds and not unique and (nullable or kind not in "fM")  # the dtype says it all

        def numeric(array) -> bool:
            if array.dtype != pandas_dtype:
                return False
            if trivial:
                return True
            if kind == "f" and len(array) <= SMALL:  # plain Python floats: the same IEEE comparisons
                present = [v for v in array.tolist() if v == v]
                if len(present) != len(array) and not nullable:
                    return False
                for op, arg in preds:
                    if op == "gt":
                        if not all(v > arg for v in present):
                            return False
                    elif op == "ge":
                        if not all(v >= arg for v in present):
                            return False
                    else:
                        return False
                return not unique or pd.Series(array).is_unique
            values = array.asi8 if kind == "M" else np.asarray(array)
            if kind == "f":
                na = np.isnan(values)
            elif kind == "M":
                na = values == np.iinfo(np.int64).min
            else:
                na = None
            if na is not None and na.any():
                if not nullable:
                    return False
                values = values[~na]
            for op, arg in preds:
                if op == "gt":
                    if not (values > arg).all():
                        return False
                elif op == "ge":
                    if not (values >= arg).all():
                        return False
                else:  # isin/len/match on a non-string column: let Pandera decide
                    return False
            return not unique or pd.Series(array).is_unique

        return numeric

    def text(values) -> bool:
        if values.dtype != object or not isinstance(values, np.ndarray):
            return False
        n = len(values)
        if n <= SMALL:
            present = [v for v in values.tolist() if not (v is None or (type(v) is float and v != v))]
            if not all(type(v) is str for v in present):
                return False
        else:
            kind = infer_dtype(values, skipna=True)
            if kind not in ("string", "empty"):
                return False
            missing = pd.isna(values)
            present = values[~missing] if missing.any() else values
        if len(present) != n and not nullable:
            return False
        for op, arg in preds:
            if n <= SMALL:
                if op == "isin":
                    ok = all(v in arg for v in present)
                elif op == "len":
                    lo, hi = arg
                    ok = all((lo is None or len(v) >= lo) and (hi is None or len(v) <= hi) for v in present)
                elif op == "match":
                    ok = all(arg.match(v) is not None for v in present)
                else:
                    return False
            else:
                s = pd.Series(present, dtype=object)
                if op == "isin":
                    ok = bool(s.isin(list(arg)).all())
                elif op == "len":
                    lo, hi = arg
                    lengths = s.str.len()
                    ok = bool(((lo is None) | (lengths >= (lo or 0))).all() and (hi is None or (lengths <= hi).all()))
                elif op == "match":
                    ok = bool(s.str.match(arg.pattern, na=False).all())
                else:
                    return False
            if not ok:
                return False
        if not unique:
            return True
        if n <= SMALL and len(present) == n:
            return len(set(present)) == n  # str values: equal exactly when pandas' hash table says so
        return pd.Series(values, dtype=object).is_unique

    return text


# The frame-level checks of the models above, on the columns' arrays, each the twin of the
# check of that name (by name, so a renamed check falls back to running Pandera's check on the
# frame). They run only after every column check passed: the dtypes are the contract's (the
# prices and quantities float64, the order types and ids str or missing), so NaN is the only
# missing price and None/NaN the only missing id. Keep each in step with its check.
def _needs(order_type: np.ndarray, types: tuple[str, ...]) -> np.ndarray:
    out = order_type == types[0]
    for t in types[1:]:
        out = out | (order_type == t)
    return np.asarray(out, dtype=bool)


FAST_FRAME_CHECKS = {
    "_limit_has_price": (("order_type", "price"),
                         lambda ot, price: not (_needs(ot, ("limit", "stop_limit")) & np.isnan(price)).any()),
    "_stop_has_stop": (("order_type", "stop_price"),
                       lambda ot, stop: not (_needs(ot, ("stop", "stop_limit")) & np.isnan(stop)).any()),
    "_fill_has_price": (("last_qty", "last_px", "trade_id"),
                        lambda qty, px, tid: not ((qty > 0) & (np.isnan(px) | pd.isna(tid))).any()),
    "_not_overfilled": (("cum_qty", "order_qty"), lambda cum, order: bool((cum <= order * (1 + 1e-9)).all())),
}


@functools.cache
def _compile(contract: type[pa.DataFrameModel]):
    """The fast predicate ``(frame) -> bool`` of ``contract``, or None when the schema has
    something it does not cover (then Pandera alone validates)."""
    schema = contract.to_schema()
    if not schema.strict or schema.ordered or schema.unique or schema.index is not None or schema.coerce:
        return None
    columns = {}
    for name, col in schema.columns.items():
        if col.regex or not col.required or col.coerce:
            return None
        is_str = str(col.dtype) == "str"
        try:
            pandas_dtype = None if is_str else pandas_dtype_of(col.dtype)
        except TypeError:
            return None
        pred = _column_check(name, col, pandas_dtype, is_str)
        if pred is None:
            return None
        columns[name] = pred
    fast_checks, frame_checks = [], []
    for check in schema.checks:
        if check.groups is not None or check.element_wise:
            return None
        twin = FAST_FRAME_CHECKS.get(check.name)
        if twin is not None and set(twin[0]) <= set(columns):
            fast_checks.append(twin)
        else:
            frame_checks.append(functools.partial(check._check_fn, **check._check_kwargs))
    names = frozenset(columns)
    order: dict[tuple, list] = {}  # per column order seen: the predicates in that order

    def passes(frame: pd.DataFrame) -> bool:
        cols = tuple(frame.columns)
        preds = order.get(cols)
        if preds is None:
            if len(cols) != len(names) or set(cols) != names:
                return False
            preds = order.setdefault(cols, [columns[n] for n in cols])
        arrays = column_arrays(frame)
        for pred, array in zip(preds, arrays, strict=True):
            if not pred(array):
                return False
        if fast_checks:
            by_name = dict(zip(cols, arrays, strict=True))
            for needed, fn in fast_checks:
                if not fn(*(by_name[n] for n in needed)):
                    return False
        for fn in frame_checks:
            out = fn(frame)
            if not isinstance(out, pd.Series) or out.dtype != bool or not out.index.equals(frame.index) or not out.all():
                return False
        return True

    return passes


def pandas_dtype_of(dtype) -> np.dtype | pd.api.extensions.ExtensionDtype:
    """The pandas dtype a Pandera data type stands for (raises TypeError if it has none)."""
    native = getattr(dtype, "type", None)
    if native is None:
        raise TypeError(f"no pandas dtype for {dtype!r}")
    return pd.api.types.pandas_dtype(native)


def fast_path_enabled() -> bool:
    return os.environ.get("TRADPAL_CONTRACTS", "fast") != "pandera"


def validate(frame: pd.DataFrame, contract: type[pa.DataFrameModel], *, step: str) -> pd.DataFrame:
    """Validate ``frame`` against ``contract``; raise `ContractViolation` naming the step."""
    if fast_path_enabled():
        passes = _compile(contract)
        try:
            if passes is not None and passes(frame):
                return frame
        except Exception:  # noqa: BLE001 - anything odd: Pandera decides
            pass
    return validate_with_pandera(frame, contract, step=step)


def validate_with_pandera(frame: pd.DataFrame, contract: type[pa.DataFrameModel], *, step: str) -> pd.DataFrame:
    """Pandera's own validation of ``frame`` (the authority the fast path defers to)."""
    schema, str_cols = _plan(contract)
    try:
        out = schema.validate(frame, lazy=False, inplace=True)  # no copy: the frame is ours
    except (SchemaError, SchemaErrors) as exc:
        raise _violation(exc, contract, step) from None
    for name in str_cols:
        col = out[name]
        kind = infer_dtype(col, skipna=True)
        if col.dtype != object or kind not in ("string", "empty"):
            bad = [int(i) for i, v in enumerate(col) if not (isinstance(v, str) or _is_missing(v))]
            raise ContractViolation(step, contract.__name__, name, f"dtype str (found {kind})", bad)
    return out


def _is_missing(v: object) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v)


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
