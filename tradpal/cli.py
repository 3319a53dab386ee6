"""`tradpal`: the command line. Bad input ends with one line naming what and where, and
exit code 2; nothing is written before the inputs are known to be good."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from tradpal.errors import InputError

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
QUIET_PREFECT = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",  # 20 s by default: short on a busy machine
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tradpal", description="TradPal Execution: signals to orders, as Prefect flows.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("replay", help="paper-replay a signals file over OHLCV bars")
    r.add_argument("--ohlcv", required=True, action="append", metavar="FILE|SYMBOL=FILE",
                   help="OHLCV CSV/Parquet: timestamp,open,high,low,close,volume; FILE with --symbol, or "
                        "SYMBOL=FILE once per symbol (several symbols share one cash account)")
    r.add_argument("--signals", required=True, help="signals CSV/Parquet: timestamp,symbol,side,quantity[,...]")
    r.add_argument("--symbol", help="the symbol of a single --ohlcv FILE, e.g. BTC/USDT")
    r.add_argument("--cash", type=_number(float), default=10_000.0, help="starting cash in the quote currency")
    r.add_argument("--fee-rate", type=_number(float), default=None,
                   help="maker and taker fee as a fraction of notional (default 0.001, or the --venue's); "
                        "wins over --venue")
    r.add_argument("--slippage-bps", type=_number(float), default=0.0,
                   help="slippage against the trader, bps (--slippage-model fixed)")
    r.add_argument("--out", required=True, help="directory for fills.csv, equity.csv and summary.json")
    r.add_argument("--risk-config", help="risk YAML (limits, sizing, alerts); see `tradpal risk example`")
    r.add_argument("--max-gap-multiple", type=_number(float), default=10.0,
                   help="market-data gate: largest gap allowed, in bars (default 10)")
    r.add_argument("--no-quality-gate", action="store_true", help="skip the Great Expectations market-data gate")
    r.add_argument("--data-docs", choices=["on-failure", "always"], default="on-failure",
                   help="market-data gate: build GX Data Docs in OUT/data_docs when it fails (default) or always")
    _simulator(r)
    _common(r)

    d = sub.add_parser("demo", help="replay an SMA crossover over real ETH/BTC candles and print a summary")
    d.add_argument("--out", default=".tradpal/demo", help="output directory (default .tradpal/demo)")
    _common(d)

    a = sub.add_parser("analytics", help="post-trade metrics, report and data-quality gate")
    which = a.add_mutually_exclusive_group()
    which.add_argument("--run", dest="run_id", help="a run id (default: the latest run)")
    which.add_argument("--since", help="every run started since this date (ISO, UTC)")
    which.add_argument("--from-replay", help="a `tradpal replay --out` folder instead of the ledger")
    which.add_argument("--shadow", metavar="RUN_ID", help="replay a live run through the simulator, fill by fill")
    a.add_argument("--ohlcv", action="append", default=[], metavar="SYMBOL=FILE",
                   help="--shadow: the market data of the live session (repeatable)")
    a.add_argument("--fee-rate", type=_number(float), default=0.001, help="--shadow: simulator fee rate")
    a.add_argument("--slippage-bps", type=_number(float), default=0.0, help="--shadow: simulator slippage")
    a.add_argument("--out", help="write metrics.json, report.html and Data Docs here (shadow.csv with --shadow)")
    a.add_argument("--database-url", help="ledger URL (default: TRADPAL_DATABASE_URL or .tradpal/ledger.db)")

    au = sub.add_parser("audit", help="a signal's whole lineage: Prefect runs, steps, orders, fills, alerts")
    au.add_argument("signal_id")
    au.add_argument("--namespace", help="live, or replay:RUN_ID (default: every namespace holding the id)")
    au.add_argument("--database-url", help="ledger URL (default: TRADPAL_DATABASE_URL or .tradpal/ledger.db)")

    ru = sub.add_parser("runs", help="the ledger's latest runs: kind, status (running, completed, failed, crashed)")
    ru.add_argument("--status", choices=["running", "completed", "failed", "crashed"], help="only runs of this status")
    ru.add_argument("--limit", type=_number(int), default=20, help="how many of the latest runs (default 20)")
    ru.add_argument("--database-url", help="ledger URL (default: TRADPAL_DATABASE_URL or .tradpal/ledger.db)")

    rk = sub.add_parser("risk", help="risk configuration: print an example, or check a file")
    rk_sub = rk.add_subparsers(dest="risk_command", required=True, metavar="ACTION", parser_class=_Parser)
    rk_sub.add_parser("example", help="print a complete, commented example configuration")
    chk = rk_sub.add_parser("check", help="validate a risk configuration file")
    chk.add_argument("file")
    st = rk_sub.add_parser("status", help="circuit breakers tripped now (from the ledger)")
    st.add_argument("--database-url", help="ledger URL (default: TRADPAL_DATABASE_URL or .tradpal/ledger.db)")
    rs = rk_sub.add_parser("reset", help="reset tripped breakers (audited with the reason)")
    rs.add_argument("--reason", required=True, help="why it is safe to resume (recorded in the audit log)")
    rs.add_argument("--name", help="only this breaker (e.g. loss_limit)")
    rs.add_argument("--scope", help="only this scope (e.g. live|portfolio, live|BTC/USDT)")
    rs.add_argument("--database-url", help="ledger URL (default: TRADPAL_DATABASE_URL or .tradpal/ledger.db)")

    lv = sub.add_parser("live", help="live execution: a batch of signals (--signals FILE), or `live run` to stream")
    lv.add_argument("--signals", help="signals CSV/Parquet: run them as one batch through live_execution")
    lv_sub = lv.add_subparsers(dest="live_command", metavar="{run}")
    lr = lv_sub.add_parser("run", help="streaming live mode: one long-lived flow run serving the HTTP intake")
    lr.add_argument("--symbol", action="append", required=True, help="a symbol to trade (repeatable)")
    lr.add_argument("--host", default="127.0.0.1", help="intake address (default loopback)")
    lr.add_argument("--port", type=_number(int), default=8787, help="intake port (0: a free one; default 8787)")
    lr.add_argument("--price", action="append", default=[], metavar="SYMBOL=PRICE",
                    help="last price for the paper broker (repeatable)")
    lr.add_argument("--cash", type=_number(float), default=10_000.0)
    lr.add_argument("--quote", default="USDT", help="quote currency of the paper account")
    lr.add_argument("--max-batch", type=_number(int), default=256, help="most signals per batch of task runs")
    lr.add_argument("--batch-interval", type=_number(float), default=0.1, metavar="SECONDS",
                    help="under load, a batch starts at most every SECONDS (default 0.1; 0: as soon as the "
                         "previous one is done)")
    lr.add_argument("--duration", type=_number(float), default=None, help="stop after this many seconds")
    lr.add_argument("--ready-file", default=None, help="write the intake's port here once it listens")
    lr.add_argument("--shared-account", action="store_true",
                    help="other workers trade this account too: don't hold the book against its balances")
    lr.add_argument("--refuse-above-approval", action="store_true",
                    help="refuse orders above the approval threshold at once instead of holding them for a "
                         "person (their own paused approval run in the Prefect UI)")
    lr.add_argument("--database-url", help="ledger URL (default: TRADPAL_DATABASE_URL or .tradpal/ledger.db)")
    lv.add_argument("--price", action="append", default=[], metavar="SYMBOL=PRICE",
                    help="last price for the paper broker (repeatable)")
    lv.add_argument("--cash", type=_number(float), default=10_000.0)
    lv.add_argument("--quote", default="USDT", help="quote currency of the paper account")
    _common(lv, chunks=False)
    sw = sub.add_parser("sweep", help="many replays (symbols x parameter sets) fanned out over Dask, one table")
    sw.add_argument("--ohlcv", required=True, action="append", metavar="SYMBOL=FILE", help="bars of a symbol (repeat)")
    sw.add_argument("--signals", required=True, action="append", metavar="SYMBOL=FILE",
                    help="signals of a symbol (repeat; one per --ohlcv symbol)")
    sw.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                    help="values of a replay parameter to sweep (repeat; cartesian product): cash, fee_rate, "
                         "slippage_bps, chunk_signals, fill_model, slippage_model, impact_k, participation, "
                         "latency_ms, venue")
    sw.add_argument("--cash", type=_number(float), default=10_000.0, help="starting cash of each replay")
    sw.add_argument("--fee-rate", type=_number(float), default=0.001, help="fee rate of each replay (default 0.001)")
    sw.add_argument("--slippage-bps", type=_number(float), default=0.0)
    sw.add_argument("--out", required=True, help="directory for sweep.csv and cases/<case>/ (each replay's files)")
    sw.add_argument("--workers", type=_number(int), default=None,
                    help="local Dask workers (default TRADPAL_DASK_WORKERS, else one per core)")
    sw.add_argument("--dask-address", default=None,
                    help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (default TRADPAL_DASK_ADDRESS)")
    _common(sw)

    from tradpal.emulator_cli import add_parser as _emulator_parser

    _emulator_parser(sub)
    from tradpal.signal_cli import add_parsers as _signal_parsers

    _signal_parsers(sub)
    return p


def _simulator(r: argparse.ArgumentParser) -> None:
    """The paper simulator's options (defaults: the basic next-open contract)."""
    r.add_argument("--fill-model", default="next-open", metavar="{next-open,close,vwap-bar}",
                   help="market orders: open of the next bar (default), close of the bar containing the "
                        "signal, or typical price (h+l+c)/3 of the next bar")
    r.add_argument("--slippage-model", default="fixed", metavar="{fixed,volatility,sqrt-impact}",
                   help="fixed --slippage-bps (default); volatility: k x (high-low)/open; sqrt-impact: "
                        "k x (high-low)/open x sqrt(qty / bar volume). Not fixed = the advanced model: "
                        "participation cap on, limits fill only through their price")
    r.add_argument("--impact-k", type=_number(float), default=None,
                   help="k of the slippage model (default 0.1 volatility, 1.0 sqrt-impact)")
    r.add_argument("--participation", type=_number(float), default=None,
                   help="max share of a bar's volume filled, in (0, 1] (default 0.1 with the advanced "
                        "model, else unlimited)")
    r.add_argument("--latency-ms", type=_number(float), default=0.0,
                   help="an order placed at t is eligible at t + latency (default 0)")
    r.add_argument("--venue", default=None, help="fee schedule: binance, kraken, bybit, kucoin, okx (base-tier "
                                                 "spot maker/taker) or custom:MAKER:TAKER")
    r.add_argument("--seed", type=_number(int), default=None,
                   help="seed of random components (every model is deterministic: recorded only)")


def _replay_params(args):
    """ReplayParams from the replay arguments (the demo sets only the basic ones)."""
    from tradpal.replay import ReplayParams

    ohlcv, symbol, markets = _markets(args.ohlcv, args.symbol)
    venue = getattr(args, "venue", None)
    fee_rate = args.fee_rate if args.fee_rate is not None or venue else 0.001
    return ReplayParams(ohlcv, args.signals, symbol, args.cash, fee_rate, args.slippage_bps, args.out,
                        args.chunk_signals, getattr(args, "risk_config", None),
                        fill_model=getattr(args, "fill_model", "next-open"),
                        slippage_model=getattr(args, "slippage_model", "fixed"),
                        impact_k=getattr(args, "impact_k", None), participation=getattr(args, "participation", None),
                        latency_ms=getattr(args, "latency_ms", 0.0), venue=venue, seed=getattr(args, "seed", None),
                        markets=markets)


def _markets(ohlcv, symbol: str | None) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(ohlcv, symbol, markets) from --ohlcv (FILE, or SYMBOL=FILE repeated) and --symbol."""
    values = [ohlcv] if isinstance(ohlcv, str) else list(ohlcv)
    if symbol is not None:
        if len(values) != 1:
            raise InputError("--symbol: names the symbol of a single --ohlcv FILE; for several symbols give "
                             "--ohlcv SYMBOL=FILE for each, without --symbol")
        return values[0], symbol, ()
    pairs = []
    for value in values:
        sym, eq, path = value.partition("=")
        if not eq or not sym.strip() or not path.strip():
            raise InputError(f"--ohlcv: expected SYMBOL=FILE (or a FILE with --symbol), got {value!r}")
        pairs.append((sym.strip().upper(), path.strip()))
    if len(pairs) == 1:
        return pairs[0][1], pairs[0][0], ()
    return "", "", tuple(pairs)


def _common(p: argparse.ArgumentParser, chunks: bool = True) -> None:
    p.add_argument("--database-url", help="ledger URL (default: TRADPAL_DATABASE_URL or .tradpal/ledger.db)")
    if chunks:
        p.add_argument("--chunk-signals", type=int, default=None,
                       help="signals per batch of eight task runs (default 2500; 1 with --risk-config)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _prepare_prefect() -> None:
    for key, value in QUIET_PREFECT.items():
        os.environ.setdefault(key, value)


def _run_flow(coro_fn, **kwargs):
    """Run a flow in-process with heartbeats off (they cost ~1 s per flow run)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return asyncio.run(coro_fn(**kwargs))


def _with_progress(quiet: bool, fn):
    from tradpal import progress

    if quiet or not sys.stderr.isatty():
        return fn()
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("replay"), BarColumn(), TextColumn("{task.completed}/{task.total} batches"),
                  TimeElapsedColumn(), transient=True) as bar:
        job = bar.add_task("replay", total=None)
        progress.set_listener(lambda done, total, label: bar.update(job, completed=done, total=total))
        try:
            return fn()
        finally:
            progress.set_listener(None)


def cmd_replay(args) -> int:
    from dataclasses import fields

    from tradpal.io import gap_note, ohlcv_gaps
    from tradpal.replay import load_inputs

    params = _replay_params(args)
    inputs = load_inputs(params)  # every input problem surfaces here, before any run starts
    for (_, path), bars in zip(params.feeds, (inputs.markets or {"": inputs.bars}).values(), strict=True):
        if gaps := ohlcv_gaps(bars):
            print(gap_note(path, gaps), file=sys.stderr)
    _prepare_prefect()
    from flows.paper_replay import paper_replay

    kwargs = {f.name: getattr(params, f.name) for f in fields(params)}
    kwargs["markets"] = dict(params.markets) or None
    kwargs["quality_gate"] = not getattr(args, "no_quality_gate", False)
    kwargs["max_gap_multiple"] = getattr(args, "max_gap_multiple", 10.0)
    kwargs["data_docs"] = getattr(args, "data_docs", "on-failure")
    from tradpal.quality import QualityGateError

    try:
        summary = _with_progress(args.quiet, lambda: _run_flow(paper_replay, database_url=args.database_url,
                                                               **kwargs))
    except QualityGateError as exc:  # bad market data: GX's summary, then one line, exit 2
        print(exc.result.summary, file=sys.stderr)
        print(f"tradpal: error: {exc}", file=sys.stderr)
        return 2
    _print_summary(summary)
    return 0


def cmd_sweep(args) -> int:
    from tradpal.config import Settings
    from tradpal.sweep import check_markets, markets_from, pairs, parse_grid, plan_sweep

    markets = markets_from(pairs(args.ohlcv, "--ohlcv"), pairs(args.signals, "--signals"))
    grid = parse_grid(args.grid)
    base = {"cash": args.cash, "fee_rate": args.fee_rate, "slippage_bps": args.slippage_bps}
    if args.chunk_signals is not None:
        base["chunk_signals"] = args.chunk_signals
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers: must be >= 1, got {args.workers}")
    if args.dask_address is not None:
        try:
            Settings(dask_address=args.dask_address)
        except ValueError as exc:
            raise InputError(f"--dask-address: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    plan_sweep(markets, grid, base, args.out)  # every input problem surfaces here, before any run starts
    check_markets(markets)
    _prepare_prefect()
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # before distributed is imported
    from flows.replay_sweep import run_sweep

    result = run_sweep([vars(m) for m in markets], grid, base, args.out, args.database_url,
                       workers=args.workers, address=args.dask_address, check_inputs=False)
    columns = ["n_fills", "final_equity", "max_drawdown", "seconds"]
    for row in result["table"]:
        print(f"{row['case']}  " + "  ".join(f"{c}={row.get(c):.6g}" for c in columns))
    print(f"table: {result['path']}")
    return 0


def cmd_demo(args) -> int:
    import time

    from tradpal.io import load_ohlcv
    from tradpal.strategies import sma_crossover, write_signals_csv

    t0 = time.perf_counter()
    ohlcv = SAMPLE_DIR / "BITTREX_ETH-BTC_5m.csv"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bars = load_ohlcv(ohlcv)
    signals = sma_crossover(bars, symbol="ETH/BTC", quantity=1.0)
    signals_path = out / "signals.csv"
    write_signals_csv(signals, signals_path)
    print(f"demo: SMA(12/48) crossover over {len(bars):,} real 5-minute ETH/BTC bars ({ohlcv.name}): "
          f"{len(signals)} signals, 1 ETH each, starting with 1 BTC, fee 0.1%, slippage 5 bps")
    args.ohlcv, args.signals, args.symbol, args.cash = str(ohlcv), str(signals_path), "ETH/BTC", 1.0
    args.fee_rate, args.slippage_bps = 0.001, 5.0
    code = cmd_replay(args)
    if code == 0:
        from flows.post_trade_analytics import post_trade_analytics

        report = _run_flow(post_trade_analytics, run_id=None, out=str(out / "analytics"),
                           database_url=args.database_url)
        m = report["metrics"]
        print(f"analytics: Sharpe {_fmt(m.get('sharpe'))}, Sortino {_fmt(m.get('sortino'))}, "
              f"VaR95 {_fmt(m.get('var_95'))}, executions quality gate "
              f"{'passed' if report['quality'] else 'FAILED'}")
        for path in report["outputs"]:
            print(f"output:      {path}")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return code


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from tradpal.reporting import summary_rows

    table = Table(title=f"Paper replay {summary.get('symbol', '')} ({summary.get('quote_currency', '')})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in summary_rows(summary):
        table.add_row(label, value)
    console = Console()
    console.print(table)
    console.print(f"run id:      {summary.get('run_id')}")
    console.print(f"ledger:      {summary.get('ledger')}")
    console.print(f"flow run:    {summary.get('flow_run_id')} (Prefect UI: `prefect server start`, PREFECT_HOME="
                  f"{os.environ.get('PREFECT_HOME', '~/.prefect')})")
    for path in summary.get("outputs", []):
        console.print(f"output:      {path}")


def cmd_shadow(args) -> int:
    import json

    from tradpal.config import load_settings
    from tradpal.io import load_ohlcv
    from tradpal.ledger import Ledger
    from tradpal.shadow import compare, live_fills, simulate

    bars = {}
    for item in args.ohlcv:
        sym, sep, path = item.partition("=")
        if not sep:
            raise InputError(f"--ohlcv: expected SYMBOL=FILE, got {item!r}")
        bars[sym.strip().upper()] = load_ohlcv(path)
    ledger = Ledger(args.database_url or load_settings().ledger_url())
    signals, live = live_fills(ledger, args.shadow)
    sim = simulate(signals, bars, fee_rate=args.fee_rate, slippage_bps=args.slippage_bps)
    frame, totals = compare(signals, live, sim)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out / "shadow.csv", index=False)
        (out / "shadow.json").write_text(json.dumps(totals, indent=2, sort_keys=True) + "\n")
    print(json.dumps(totals, indent=2, sort_keys=True))
    return 0


def cmd_analytics(args) -> int:
    if args.shadow:
        return cmd_shadow(args)
    _prepare_prefect()
    from flows.post_trade_analytics import post_trade_analytics
    from tradpal.quality import QualityGateError

    try:
        report = _run_flow(post_trade_analytics, run_id=args.run_id, since=args.since, from_replay=args.from_replay,
                           out=args.out, database_url=args.database_url)
    except QualityGateError as exc:
        print(exc.result.summary)
        print(f"tradpal: {exc}", file=sys.stderr)
        return 1
    print(report["markdown"])
    return 0


def _prices(items: list[str]) -> dict[str, float]:
    prices = {}
    for item in items:
        sym, _, value = item.partition("=")
        try:
            prices[sym.strip().upper()] = float(value)
        except ValueError:
            raise InputError(f"--price: expected SYMBOL=PRICE, got {item!r}") from None
    return prices


def cmd_live_run(args) -> int:
    prices = _prices(args.price)
    if args.max_batch < 1:
        raise InputError(f"--max-batch: must be at least 1, got {args.max_batch}")
    if not 0 <= args.batch_interval <= 60:
        raise InputError(f"--batch-interval: must be between 0 and 60 seconds, got {args.batch_interval}")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port: must be 0..65535, got {args.port}")
    _prepare_prefect()
    from flows.live_stream import live_stream

    summary = _run_flow(live_stream, symbols=args.symbol, host=args.host, port=args.port, prices=prices,
                        cash=args.cash, quote=args.quote, database_url=args.database_url, max_batch=args.max_batch,
                        batch_interval_s=args.batch_interval,
                        duration_s=args.duration, ready_file=args.ready_file,
                        shared_account=args.shared_account, approval_hold=not args.refuse_above_approval)
    print(json.dumps(summary, indent=2, default=str))
    return 0 if summary.get("ok") else 1


def cmd_live(args) -> int:
    from tradpal.io import load_signals

    if args.live_command == "run":
        return cmd_live_run(args)
    if not args.signals:
        raise InputError("live: give --signals FILE (a batch), or `tradpal live run` to stream")
    prices = _prices(args.price)
    load_signals(args.signals)
    _prepare_prefect()
    from flows.live_execution import live_execution_from_file

    summary = _run_flow(live_execution_from_file, signals=args.signals, prices=prices, cash=args.cash,
                        quote=args.quote, database_url=args.database_url)
    print(summary["markdown"])
    return 0 if summary.get("ok") else 1


def cmd_risk(args) -> int:
    from risk.config import EXAMPLE, load_risk_config

    if args.risk_command == "example":
        print(EXAMPLE, end="")
        return 0
    if args.risk_command in ("status", "reset"):
        return _breakers(args)
    config = load_risk_config(args.file)
    print(f"{args.file}: valid ({len(config.assets)} assets, {len(config.sectors)} sectors, "
          f"{len(config.sizing.strategies)} strategy sizing rules)")
    return 0


def _breakers(args) -> int:
    from tradpal.config import load_settings
    from tradpal.ledger import Ledger, Provenance

    ledger = Ledger(args.database_url or load_settings().ledger_url())
    if args.risk_command == "reset":
        if not args.reason.strip():
            raise InputError("--reason: must say why it is safe to resume")
        done = ledger.reset_breakers(args.reason, name=args.name, scope=args.scope, prov=Provenance())
        print(f"reset {len(done)} breaker(s){': ' + ', '.join(done) if done else ''}")
        return 0
    active = ledger.active_breakers()
    if not active:
        print(f"no breaker tripped ({ledger.url})")
        return 0
    for b in active:
        until = b["until"].isoformat() if b["until"] else "until reset"
        print(f"TRIPPED {b['name']} [{b['scope']}] since {b['tripped_at'].isoformat()} ({until}): {b['reason']}")
    return 0


def cmd_exchange_emulator(args) -> int:
    from tradpal.emulator_cli import cmd_exchange_emulator as run

    return run(args)


def cmd_audit(args) -> int:
    from tradpal.audit import lineage_text
    from tradpal.config import load_settings
    from tradpal.ledger import Ledger

    _prepare_prefect()
    print(lineage_text(Ledger(args.database_url or load_settings().ledger_url()), args.signal_id, args.namespace))
    return 0


def cmd_runs(args) -> int:
    from tradpal.audit import runs_text
    from tradpal.config import load_settings
    from tradpal.ledger import Ledger

    if args.limit < 1:
        raise InputError(f"--limit: must be at least 1, got {args.limit}")
    print(runs_text(Ledger(args.database_url or load_settings().ledger_url()), limit=args.limit, status=args.status))
    return 0


def cmd_signal(args) -> int:
    from tradpal.signal_cli import cmd_signal as run

    return run(args)


def cmd_intake(args) -> int:
    from tradpal.signal_cli import cmd_intake as run

    _prepare_prefect()
    return run(args)


COMMANDS = {"signal": cmd_signal, "intake": cmd_intake, "audit": cmd_audit, "runs": cmd_runs, "risk": cmd_risk, "replay": cmd_replay, "sweep": cmd_sweep, "demo": cmd_demo, "analytics": cmd_analytics, "live": cmd_live,
            "exchange-emulator": cmd_exchange_emulator}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from tradpal.config import load_settings

        load_settings()  # invalid TRADPAL_* configuration fails here, naming the key, before any run
        return COMMANDS[args.command](args)
    except InputError as exc:
        print(f"tradpal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tradpal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
