"""Serve the four flows from this process (a local alternative to a work pool):
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.serve
"""

from __future__ import annotations

from prefect import serve

from flows.live_execution import live_execution
from flows.paper_replay import paper_replay
from flows.post_trade_analytics import post_trade_analytics
from flows.risk_monitor import risk_monitor


def main() -> None:
    serve(
        paper_replay.to_deployment(name="paper-replay", tags=["tradpal", "paper"]),
        live_execution.to_deployment(name="live-execution", tags=["tradpal", "live"]),
        post_trade_analytics.to_deployment(name="post-trade-analytics", tags=["tradpal", "analytics"]),
        risk_monitor.to_deployment(name="risk-monitor", tags=["tradpal", "risk"], interval=60),
    )


if __name__ == "__main__":
    main()
