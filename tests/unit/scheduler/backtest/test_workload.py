"""Traces to hourly work: rate, tier mix, daily shape."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.backtest.inputs import Trace
from scheduler.backtest.workload import build_workload, daily_shape, parse_tier_mix
from scheduler.core.models import SMOLLM2, Tier
from tests.unit.scheduler.backtest.builders import START_S


def trace() -> Trace:
    # Four requests over 3 s: 1,000 + 3,000 tokens and 2 x 500; mean 1,250 tokens a request.
    return Trace(
        "t.csv",
        np.array([0.0, 1.0, 2.0, 3.0]),
        np.array([900.0, 2900.0, 400.0, 400.0]),
        np.array([100.0, 100.0, 100.0, 100.0]),
    )


def test_rate_and_mix_make_the_hourly_tokens() -> None:
    mix = parse_tier_mix("interactive=1,flex=3")
    work = build_workload([trace()], START_S, 2, 10.0, mix, SMOLLM2)
    assert [c.tier for c in work.classes] == [Tier.INTERACTIVE, Tier.FLEX]
    # 10 requests/s * 3,600 s = 36,000 an hour: 9,000 interactive, 27,000 flex;
    # at 1,250 tokens each: 11.25 and 33.75 million tokens.
    np.testing.assert_allclose(work.requests[:, 0], [9_000, 27_000])
    np.testing.assert_allclose(work.mtok[:, 1], [11.25, 33.75])
    flex = work.classes[1]
    assert flex.deadline_h == 6  # the catalogue's flex deadline, 6 h
    assert flex.usd_per_mtok == SMOLLM2.tiers[Tier.FLEX].usd_per_million_tokens
    assert work.classes[0].deadline_h == 1


def test_daily_shape_averages_one_over_a_day() -> None:
    shape = daily_shape(START_S, 48, 0.4, 15.0)
    assert shape.mean() == pytest.approx(1.0)
    assert int(np.argmax(shape[:24])) == 15  # start is midnight UTC


@pytest.mark.parametrize("text", ["fast=1", "interactive=x", "interactive=0", "flex=-1"])
def test_bad_tier_mix(text: str) -> None:
    with pytest.raises(ValueError, match="tier mix"):
        parse_tier_mix(text)
