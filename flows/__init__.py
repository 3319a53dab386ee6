"""The three flows: `paper_replay`, `live_execution`, `post_trade_analytics`."""
