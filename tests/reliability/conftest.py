"""Hypothesis profiles: `make test` runs a few hundred cases per property; `make chaos`
(TRADPAL_HYPOTHESIS_PROFILE=chaos) runs thousands."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("chaos", max_examples=2_500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("TRADPAL_HYPOTHESIS_PROFILE", "default"))
