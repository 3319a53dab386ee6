"""The compiled fast path of `tasks.contracts.validate` against Pandera itself: it may only
say "passes" where Pandera passes too, and it must pass the frames the steps produce (or it
would buy nothing). Hypothesis breaks the steps' frames one cell, one column at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks import contracts as c
from tasks.contracts import CONTRACTS, ContractViolation
from tests.tasks.test_contracts import frames  # noqa: F401 - the steps' own frames (fixture)

ALL = list(CONTRACTS)

ODD_VALUES = [np.nan, None, -1.0, 0.0, 1e-12, 3, "", "x" * 200, "hold", "btc/usdt", "BTC/USDT", "buy", "sell",
              "FILL", "NEW", "GTC", "DAY", "market", "stop_limit", True, pd.NaT,
              pd.Timestamp("2024-01-01T00:00:00Z"), pd.Timestamp("2024-01-01T00:00:00")]


def pandera_passes(frame: pd.DataFrame, contract: str) -> bool:
    try:
        c.validate_with_pandera(frame.copy(), CONTRACTS[contract], step="t")
    except ContractViolation:
        return False
    return True


@pytest.mark.parametrize("contract", ALL)
def test_every_contract_compiles_and_passes_its_steps_frame(frames: dict, contract: str) -> None:  # noqa: F811
    passes = c._compile(CONTRACTS[contract])
    assert passes is not None, f"{contract} has a check the fast path does not cover"
    assert passes(frames[contract].copy())
    assert pandera_passes(frames[contract], contract)


@st.composite
def mutation(draw, frame_by_contract: dict):
    contract = draw(st.sampled_from(ALL))
    frame = frame_by_contract[contract].copy()
    kind = draw(st.sampled_from(["cell", "cell", "cell", "column_dtype", "drop", "extra", "duplicate_row"]))
    column = draw(st.sampled_from(list(frame.columns)))
    if kind == "cell":
        row = draw(st.integers(0, len(frame) - 1))
        value = draw(st.sampled_from(ODD_VALUES))
        values = frame[column].astype(object).tolist()
        values[row] = value
        try:
            frame[column] = pd.Series(values, index=frame.index, dtype=frame[column].dtype)
        except (TypeError, ValueError):
            frame[column] = pd.Series(values, index=frame.index, dtype=object)
    elif kind == "column_dtype":
        frame[column] = frame[column].astype(object if frame[column].dtype != object else "string")
    elif kind == "drop":
        frame = frame.drop(columns=[column])
    elif kind == "extra":
        frame["unexpected"] = 1.0
    else:
        frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
    return contract, frame


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_fast_path_never_passes_what_pandera_refuses(frames: dict, data) -> None:  # noqa: F811
    contract, frame = data.draw(mutation(frames))
    try:
        fast = c._compile(CONTRACTS[contract])(frame.copy())
    except Exception:  # noqa: BLE001 - `validate` treats a raising fast path as "not passed"
        fast = False
    if fast:
        assert pandera_passes(frame, contract), f"fast path passed a frame Pandera refuses ({contract})"
    if not pandera_passes(frame, contract):
        with pytest.raises(ContractViolation):
            c.validate(frame.copy(), CONTRACTS[contract], step="t")


def test_a_large_frame_takes_the_vectorised_branches(frames: dict) -> None:  # noqa: F811
    big = pd.concat([frames["PlacedFrame"]] * 50, ignore_index=True)
    big["client_order_id"] = [f"tp-{i}" for i in range(len(big))]
    assert len(big) > c.SMALL
    assert c._compile(CONTRACTS["PlacedFrame"])(big)
    big.loc[70, "time_in_force"] = "DAY"
    assert not c._compile(CONTRACTS["PlacedFrame"])(big)
    with pytest.raises(ContractViolation, match="time_in_force"):
        c.validate(big, CONTRACTS["PlacedFrame"], step="placement")


def test_pandera_alone_when_the_fast_path_is_off(frames: dict, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    calls = []
    real = c.validate_with_pandera
    monkeypatch.setattr(c, "validate_with_pandera", lambda *a, **k: calls.append(1) or real(*a, **k))
    c.validate(frames["OrderFrame"].copy(), CONTRACTS["OrderFrame"], step="t")
    assert calls == []
    monkeypatch.setenv("TRADPAL_CONTRACTS", "pandera")
    c.validate(frames["OrderFrame"].copy(), CONTRACTS["OrderFrame"], step="t")
    assert calls == [1]
