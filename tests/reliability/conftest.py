"""Hypothesis profiles: `make test` runs a few hundred cases per property; `make chaos`
(TRADPAL_HYPOTHESIS_PROFILE=chaos) runs thousands. The crash tests' ``rig``."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.reliability.live_process import crash_rig

settings.register_profile("default", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("chaos", max_examples=2_500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("TRADPAL_HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module")
def rig(prefect_api, tmp_path_factory):
    """The emulator process, the forkserver of live processes, one ledger, a work folder
    (`tests.reliability.live_process.crash_rig`), once per test module."""
    yield from crash_rig(tmp_path_factory.mktemp("crash"))
