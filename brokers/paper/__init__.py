"""The paper broker: a simulated spot venue for replays (simulated clock) and live
paper trading (wall clock)."""

from brokers.paper.broker import PaperBroker

__all__ = ["PaperBroker"]
