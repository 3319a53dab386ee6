"""Human-readable summaries: a markdown artifact for the Prefect UI, a table for the console."""

from __future__ import annotations

ROWS = [
    ("Signals", "signals", "{:,}"),
    ("Fills", "n_fills", "{:,}"),
    ("Rejected", "rejected", "{:,}"),
    ("Unfilled", "unfilled", "{:,}"),
    ("Fees", "total_fees", "{:,.8f}"),
    ("Realised PnL", "realized_pnl", "{:,.8f}"),
    ("Unrealised PnL", "unrealized_pnl", "{:,.8f}"),
    ("Max drawdown", "max_drawdown", "{:.2%}"),
    ("Final cash", "final_cash", "{:,.8f}"),
    ("Final position", "final_position", "{:,.8f}"),
    ("Final equity", "final_equity", "{:,.8f}"),
]


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    out = []
    for label, key, fmt in ROWS:
        if key in summary and summary[key] is not None:
            out.append((label, fmt.format(summary[key])))
    pnl = summary.get("final_equity", 0.0) - summary.get("initial_cash", 0.0)
    out.insert(7, ("PnL (equity - initial cash)", f"{pnl:,.8f}"))
    return out


def summary_markdown(summary: dict) -> str:
    lines = [f"# Paper replay {summary.get('symbol', '')}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(summary)]
    lines += ["", f"Run `{summary.get('run_id')}` in ledger `{summary.get('ledger')}`."]
    return "\n".join(lines)
