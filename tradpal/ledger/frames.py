"""pandas <-> ledger rows: column-wise conversion to plain Python values (no per-row pandas
calls) and back to typed frames."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from math import isnan
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import JSON, Boolean, Integer, Table
from sqlalchemy.types import TypeEngine

from tradpal.ledger.engine import json_dumps
from tradpal.ledger.models import Amount, UTCDateTime

__all__ = [
    "column_kind",
    "column_list",
    "column_values",
    "columns_from_frame",
    "convert",
    "convert_sqlite",
    "kind_of",
    "sqlite_datetime",
    "sqlite_value",
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


_KINDS: dict[tuple[str, str], str] = {}


def kind_of(table: Table, name: str) -> str:
    """`column_kind` of ``table``'s column ``name`` ("str" for a name not in the table)."""
    key = (table.name, name)
    kind = _KINDS.get(key)
    if kind is None:
        kind = _KINDS[key] = column_kind(table.c[name].type) if name in table.c else "str"
    return kind


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
_NAT = np.iinfo(np.int64).min
_OBJECT = np.dtype(object)


def _convert_small(series: pd.Series, kind: str) -> list[Any] | None:
    """`convert` for a few rows of an exact dtype (a live signal's one-row frames), in
    plain Python; None when the column needs the general path."""
    try:
        values = series._values  # the ndarray or extension array, without a copy
    except AttributeError:
        return None
    return _small_values(values, kind)


def _small_values(arr: Any, kind: str, sqlite: bool = False) -> list[Any] | None:
    """`_convert_small` on a column's array (``sqlite``: datetimes as SQLite stores them)."""
    dtype = arr.dtype
    if kind == "datetime":
        if dtype != _UTC_NS:
            return None
        nat = _NAT
        if sqlite:
            return [None if v == nat else (_EPOCH + timedelta(microseconds=v // 1000)).strftime(_SQLITE_DT)
                    for v in arr.asi8.tolist()]
        return [None if v == nat else _EPOCH + timedelta(microseconds=v // 1000) for v in arr.asi8.tolist()]
    if not isinstance(arr, np.ndarray):
        return None
    if kind == "float" and dtype == np.float64:
        return [None if v != v else v for v in arr.tolist()]
    if dtype == _OBJECT:
        values = arr.tolist()
        if kind == "str":
            if all(type(v) is str for v in values):
                return values
            if all(v is None or type(v) is str for v in values):  # (None is null on every path)
                return values
            return None
        if kind == "float" and all(v is None or type(v) is float or type(v) is int for v in values):
            return [None if v is None or v != v else float(v) for v in values]  # (not bools, not text)
        return None
    if kind == "bool" and dtype == np.bool_:
        return arr.tolist()
    return None


def _small_column(frame: pd.DataFrame, name: str) -> Any:
    """A small frame's column ``name`` as its array, read off the frame (no Series built),
    or None (a large frame, a duplicated name, or a pandas without the accessor)."""
    if len(frame) > SMALL:
        return None
    try:
        loc = frame.columns.get_loc(name)
        return frame._get_column_array(loc) if type(loc) is int else None
    except (AttributeError, TypeError):
        return None


def column_list(frame: pd.DataFrame, name: str) -> list[Any]:
    """``frame[name].tolist()``; a small frame's numpy column is read from its array (no
    Series built)."""
    arr = _small_column(frame, name)
    if isinstance(arr, np.ndarray):
        return arr.tolist()
    return frame[name].tolist()


def column_values(frame: pd.DataFrame, name: str, kind: str, *, op: str = "convert", sqlite: bool = False,
                  key: str | None = None) -> list[Any]:
    """Frame column ``name`` converted as ``kind`` (`convert`, or `convert_sqlite` with
    ``sqlite``; ``key``: the column's name in errors). A small frame's column is read
    from its array (no Series built: ~15 columns per write of a live signal)."""
    if len(frame) <= SMALL:
        arr = _small_column(frame, name)
        if arr is not None:
            quick = _small_values(arr, kind, sqlite)
            if quick is not None:  # (never for JSON: always the general path)
                return quick
    col = frame[name]
    if isinstance(col, pd.DataFrame):
        raise ValueError(f"{op}: duplicate column {name!r} in frame")
    return convert_sqlite(col, kind, key or name) if sqlite else convert(col, kind, key or name)


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


_SQLITE_DT = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's SQLite DATETIME storage format


def sqlite_datetime(value: datetime | None) -> str | None:
    """A datetime as the ledger stores it on SQLite: the UTC wall time (naive taken as
    UTC) in SQLAlchemy's storage format, as `UTCDateTime` would bind it."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime(_SQLITE_DT) if value.year >= 1000 else (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}.{value.microsecond:06d}")


def sqlite_value(value: Any, kind: str) -> Any:
    """One Python value (a default, a constant) as SQLite stores it for a column of ``kind``."""
    if value is None:
        return None
    if kind == "datetime":
        return sqlite_datetime(value)
    if kind == "json":
        return json_dumps(value)
    if kind == "float":
        return float(value)
    return value


def _sqlite_datetimes(series: pd.Series) -> list[Any]:
    """A datetime column as SQLite storage strings, vectorised (no datetime objects)."""
    # naive -> UTC, aware -> converted to UTC
    ts = series if series.dtype == _UTC_NS else pd.to_datetime(series, utc=True)
    us = ts.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    nat = np.isnat(us)
    text = np.datetime_as_string(us, unit="us")
    if len(text) and not nat.all():
        chars = text.view(np.uint32).reshape(len(text), -1)
        chars[:, 10] = 32  # "T" -> " "
    out = text.tolist()
    if nat.any():
        for i in np.flatnonzero(nat).tolist():
            out[i] = None
    return out


def convert_sqlite(series: pd.Series, kind: str, name: str) -> list[Any]:
    """`convert`, then as SQLite stores the values (the driver binds them as they are):
    datetimes as UTC text in SQLAlchemy's format, JSON as text, the rest unchanged."""
    if kind == "datetime":
        if len(series) <= SMALL and series.dtype == _UTC_NS:
            return _small_values(series._values, kind, sqlite=True)
        try:
            return _sqlite_datetimes(series)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {name!r}: cannot convert to {kind}: {exc}") from exc
    values = convert(series, kind, name)
    if kind == "json":
        return [None if v is None else json_dumps(v) for v in values]
    return values


def columns_from_frame(
    frame: pd.DataFrame, table: Table, names: Iterable[str], *, op: str, required: Sequence[str] = (),
    sqlite: bool = False, source: Mapping[str, str] | None = None,
) -> dict[str, list[Any]]:
    """Convert the listed columns that are present in ``frame`` (typed after ``table``'s
    columns; names not in the table are converted as strings). Raises ValueError when a
    required column is missing. ``sqlite``: the values as SQLite stores them
    (`convert_sqlite`), for the driver-level writes. ``source``: {column: frame column}
    for the columns the frame names otherwise (read from there only)."""
    src = {n: n for n in names}
    if source:
        src.update((k, v) for k, v in source.items() if k in src)
    missing = [c for c in required if src.get(c, c) not in frame.columns]
    if missing:
        raise ValueError(f"{op}: frame is missing required column(s) {missing}; it has {list(frame.columns)}")
    out: dict[str, list[Any]] = {}
    present = frame.columns
    for name, column in src.items():
        if column in present:
            kind = kind_of(table, name)
            out[name] = column_values(frame, column, kind, op=op, sqlite=sqlite, key=name)
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
