"""How long the reliability campaigns run: `make test` a handful of trials, `make chaos`
(TRADPAL_RELIABILITY_PROFILE=chaos) the long version. TRADPAL_CRASH_TRIALS overrides."""

from __future__ import annotations

import os

CHAOS = os.environ.get("TRADPAL_RELIABILITY_PROFILE", "default") == "chaos"
CRASH_TRIALS = int(os.environ.get("TRADPAL_CRASH_TRIALS", 60 if CHAOS else 3))
CAMPAIGN_SIGNALS = 6 if CHAOS else 3  # signals per (fault, step) run of the fault campaign
REPORT = os.environ.get("TRADPAL_RELIABILITY_REPORT")  # JSON lines of every trial's figures, if set
