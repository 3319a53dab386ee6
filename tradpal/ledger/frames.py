"""pandas <-> ledger rows: column-wise conversion to plain Python values (no per-row pandas
calls) and back to typed frames."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import Enum
from math import isnan
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import JSON, Boolean, Integer, Table
from sqlalchemy.types import TypeEngine

from tradpal.ledger.models import Amount, UTCDateTime

__all__ = [
    "column_kind",
    "columns_from_frame",
    "convert",
    "missing_keys",
    "rows_from_columns",
    "scalar_str",
    "to_frame",
]


def column_kind(type_: TypeEngine[Any]) -> str:
    if isinstance(type_, Amount):
        return "float"
    if isinstance(type_, UTCDateTime):
        return "datetime"
    if isinstance(type_, Boolean):
        return "bool"
    if isinstance(type_, JSON):
        return "json"
    if isinstance(type_, Integer):
        return "int"
    return "str"


def scalar_str(v: Any) -> str:
    if isinstance(v, Enum):
        v = v.value
    return v if isinstance(v, str) else str(v)


def _json_value(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v  # a plain message: stored as a JSON string
    return v


SMALL = 64  # rows: below this, plain Python over exact dtypes beats pandas' conversions
_EPOCH = datetime(1970, 1, 1)
_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")


def _convert_small(series: pd.Series, kind: str) -> list[Any] | None:
    """`convert` for a few rows of an exact dtype (a live signal's one-row frames), in
    plain Python; None when the column needs the general path."""
    dtype = series.dtype
    if kind == "float" and dtype == np.float64:
        return [None if v != v else v for v in series.tolist()]
    if kind == "datetime" and dtype == _UTC_NS:
        nat = np.iinfo(np.int64).min
        return [None if v == nat else _EPOCH + timedelta(microseconds=v // 1000) for v in series.array.asi8.tolist()]
    if kind == "str" and dtype == np.dtype(object):
        values = series.tolist()
        if all(type(v) is str for v in values):
            return values
    return None


def convert(series: pd.Series, kind: str, name: str) -> list[Any]:
    """One column as a list of plain Python values; NaN/NaT/None -> None."""
    if len(series) <= SMALL:
        quick = _convert_small(series, kind)
        if quick is not None:
            return quick
    try:
        if kind == "float":
            arr = pd.to_numeric(series, errors="raise").to_numpy(dtype="float64", na_value=np.nan)
            return [None if isnan(v) else v for v in arr.tolist()]
        if kind == "datetime":
            ts = pd.to_datetime(series, utc=True)  # naive -> UTC, aware -> converted to UTC
            # datetime64[us].tolist() gives naive datetime objects (NaT -> None), in UTC
            return ts.dt.tz_localize(None).to_numpy(dtype="datetime64[us]").tolist()
        mask = series.isna().to_numpy()
        values = series.tolist()
        if kind == "str":
            return [
                None if m else (v if type(v) is str else scalar_str(v))
                for v, m in zip(values, mask, strict=True)
            ]
        if kind == "bool":
            return [None if m else bool(v) for v, m in zip(values, mask, strict=True)]
        if kind == "int":
            return [None if m else int(v) for v, m in zip(values, mask, strict=True)]
        if kind == "json":
            return [None if m else _json_value(v) for v, m in zip(values, mask, strict=True)]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column {name!r}: cannot convert to {kind}: {exc}") from exc
    raise AssertionError(kind)


def columns_from_frame(
    frame: pd.DataFrame, table: Table, names: Iterable[str], *, op: str, required: Sequence[str] = ()
) -> dict[str, list[Any]]:
    """Convert the listed columns that are present in ``frame`` (typed after ``table``'s
    columns; names not in the table are converted as strings). Raises ValueError when a
    required column is missing."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{op}: frame is missing required column(s) {missing}; it has {list(frame.columns)}")
    out: dict[str, list[Any]] = {}
    for name in names:
        if name in frame.columns:
            col = frame[name]
            if isinstance(col, pd.DataFrame):
                raise ValueError(f"{op}: duplicate column {name!r} in frame")
            kind = column_kind(table.c[name].type) if name in table.c else "str"
            out[name] = convert(col, kind, name)
    return out


def missing_keys(values: list[Any], keys: list[Any], limit: int = 5) -> list[Any]:
    """The keys of the rows whose value is None (for error messages)."""
    return [k for v, k in zip(values, keys, strict=True) if v is None][:limit]


def rows_from_columns(
    columns: dict[str, list[Any]], n: int, constants: dict[str, Any]
) -> list[dict[str, Any]]:
    names = list(columns) + list(constants)
    lists = list(columns.values()) + [[v] * n for v in constants.values()]
    return [dict(zip(names, vals, strict=True)) for vals in zip(*lists, strict=True)]


def to_frame(rows: Sequence[Any], table: Table) -> pd.DataFrame:
    """Typed frame in the table's column order: Amount -> float64, datetimes ->
    datetime64[ns, UTC], booleans -> pandas "boolean", ids -> int64, the rest object."""
    names = [c.name for c in table.columns]
    df = pd.DataFrame.from_records([tuple(r) for r in rows], columns=names)
    for c in table.columns:
        kind = column_kind(c.type)
        if kind == "float":
            df[c.name] = df[c.name].astype("float64")
        elif kind == "datetime":
            df[c.name] = pd.to_datetime(df[c.name], utc=True).astype("datetime64[ns, UTC]")
        elif kind == "bool":
            df[c.name] = df[c.name].astype("boolean")
        elif kind == "int" and not c.nullable:
            df[c.name] = df[c.name].astype("int64")
        else:
            df[c.name] = df[c.name].astype(object)
    return df
