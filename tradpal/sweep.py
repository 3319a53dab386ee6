"""Replay sweeps as plain functions: many replays (symbols x parameter sets), each one
the ordinary paper replay (`tradpal.replay`), planned here, run one per task by the
`replay_sweep` flow (fanned out over Dask), and gathered into one table.

A sweep is a list of markets (symbol, OHLCV file, signals file) and a grid
``{parameter: [values]}`` over `SWEEPABLE` replay parameters; every market is replayed
with every combination (the cartesian product), each case on its own account. Every
problem is an `InputError` naming the flag and the value, raised before anything runs.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tradpal.errors import InputError
from tradpal.replay import ReplayParams, _atomic, load_inputs, run_replay, write_outputs

#: replay parameters a grid may vary, with how a value is read from text
SWEEPABLE: dict[str, type] = {
    "cash": float, "fee_rate": float, "slippage_bps": float, "chunk_signals": int, "fill_model": str,
    "slippage_model": str, "impact_k": float, "participation": float, "latency_ms": float, "venue": str,
}
#: the summary figures each case contributes to the table
FIGURES = ("n_fills", "rejected", "unfilled", "total_fees", "realized_pnl", "unrealized_pnl", "final_equity",
           "max_drawdown")


@dataclass(frozen=True)
class Market:
    symbol: str
    ohlcv: str
    signals: str


@dataclass(frozen=True)
class SweepCase:
    """One replay of the sweep: ``overrides`` are its grid values."""

    case_id: str
    symbol: str
    overrides: tuple[tuple[str, Any], ...]
    params: ReplayParams


def pairs(values: list[str], flag: str) -> dict[str, str]:
    """``SYMBOL=FILE`` arguments as {SYMBOL: FILE} (symbols upper-cased, each at most once)."""
    out: dict[str, str] = {}
    for value in values:
        symbol, eq, path = value.partition("=")
        symbol, path = symbol.strip().upper(), path.strip()
        if not eq or not symbol or not path:
            raise InputError(f"{flag}: expected SYMBOL=FILE, got {value!r}")
        if symbol in out:
            raise InputError(f"{flag}: symbol {symbol} given more than once")
        out[symbol] = path
    return out


def markets_from(ohlcv: dict[str, str], signals: dict[str, str]) -> list[Market]:
    """Pair each symbol's bars with its signals; every symbol needs both."""
    for symbol in ohlcv:
        if symbol not in signals:
            raise InputError(f"--signals: no signals for {symbol} (give --signals {symbol}=FILE)")
    for symbol in signals:
        if symbol not in ohlcv:
            raise InputError(f"--ohlcv: no bars for {symbol} (give --ohlcv {symbol}=FILE)")
    if not ohlcv:
        raise InputError("--ohlcv: give at least one SYMBOL=FILE")
    return [Market(s, ohlcv[s], signals[s]) for s in ohlcv]


def parse_grid(items: list[str]) -> dict[str, list]:
    """``NAME=V1,V2,...`` arguments as {NAME: [values]} in the order given."""
    grid: dict[str, list] = {}
    for item in items:
        name, eq, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or not name or not text.strip():
            raise InputError(f"--grid: expected NAME=VALUE[,VALUE...], got {item!r}")
        if name not in SWEEPABLE:
            raise InputError(f"--grid: unknown parameter {name!r} (sweepable: {', '.join(SWEEPABLE)})")
        if name in grid:
            raise InputError(f"--grid: {name} given more than once (list its values in one --grid)")
        grid[name] = [_value(name, v.strip(), item) for v in text.split(",")]
    return grid


def _value(name: str, text: str, item: str) -> Any:
    kind = SWEEPABLE[name]
    if kind is str:
        if not text:
            raise InputError(f"--grid: empty value for {name} in {item!r}")
        return text
    try:
        return kind(text)
    except ValueError:
        raise InputError(f"--grid: {name}: not {'an integer' if kind is int else 'a number'}: {text!r}") from None


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def case_id(symbol: str, overrides: tuple[tuple[str, Any], ...]) -> str:
    """A name usable as a folder: ``BTC-USDT`` or ``BTC-USDT__slippage_bps=5__fee_rate=0.002``."""
    parts = [symbol.replace("/", "-").replace(":", "-")] + [f"{k}={_label(v)}" for k, v in overrides]
    return "__".join(parts)


def plan_sweep(markets: list[Market], grid: dict[str, list] | None = None, base: dict | None = None,
               out: str | None = None) -> list[SweepCase]:
    """Every market x every combination of the grid's values, over ``base`` (replay
    parameters shared by all cases). Each case's parameters are checked here (the flag
    named is the grid's when a grid value is at fault); ``out``: each case writes its
    files to ``out/cases/<case_id>``."""
    grid = grid or {}
    base = dict(base or {})
    unknown = sorted(set(base) - set(SWEEPABLE))
    if unknown:
        raise InputError(f"sweep: unknown replay parameter {unknown[0]!r} (allowed: {', '.join(SWEEPABLE)})")
    combos = [tuple(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    cases = []
    for market, combo in itertools.product(markets, combos):
        cid = case_id(market.symbol, combo)
        params = ReplayParams(market.ohlcv, market.signals, market.symbol,
                              out=str(Path(out) / "cases" / cid) if out else None, **{**base, **dict(combo)})
        try:
            params.check()
        except InputError as exc:
            where = f"--grid {', '.join(f'{k}={_label(v)}' for k, v in combo)}: " if combo else ""
            raise InputError(f"{where}{exc}") from None
        cases.append(SweepCase(cid, market.symbol, combo, params))
    return cases


def check_markets(markets: list[Market]) -> None:
    """Load every market's files once, so that bad input stops the sweep before any case runs."""
    for market in markets:
        load_inputs(ReplayParams(market.ohlcv, market.signals, market.symbol))


async def run_case(case: SweepCase, database_url: str) -> dict:
    """One replay, exactly as `tradpal replay` runs it (the step functions, the ledger,
    the same outputs), on the ledger at ``database_url`` (already migrated); its row."""
    from tradpal.ledger import Ledger

    ledger = Ledger(database_url, migrate=False)
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        inputs = load_inputs(case.params)
        result = await run_replay(case.params, inputs, ledger)
        summary = result.summary
        if case.params.out:
            paths = write_outputs(case.params.out, result.reports, summary, result.equity)
            summary = {**summary, "outputs": [str(p) for p in paths]}
        ledger.finish_run(summary["run_id"], "completed", summary)
        return case_row(case, summary, time.perf_counter() - t0, time.process_time() - cpu0)
    finally:
        ledger.close()


def case_row(case: SweepCase, summary: dict, seconds: float, cpu_seconds: float) -> dict:
    """The case's line of the table: its grid values, the replay's figures, wall and CPU
    seconds (of the process running it), and where it ran."""
    return {"case": case.case_id, "symbol": case.symbol, **dict(case.overrides),
            **{k: summary[k] for k in FIGURES}, "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu_seconds, 3), "run_id": summary["run_id"],
            "out": case.params.out, "pid": os.getpid()}


def sweep_table(cases: list[SweepCase], rows: list[dict]) -> pd.DataFrame:
    """One row per case, in plan order (a case that failed has its ``error``)."""
    by_case = {r["case"]: r for r in rows}
    table = pd.DataFrame([by_case[c.case_id] for c in cases if c.case_id in by_case])
    if "error" not in table:
        table["error"] = None
    return table


def write_table(out: str | Path, table: pd.DataFrame) -> Path:
    """``out/sweep.csv``, written atomically."""
    path = Path(out).resolve() / "sweep.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda tmp: table.to_csv(tmp, index=False))
    return path
