"""Admission's limits come from the scheduler's settings (HASHSERVE_ADMISSION_* and the rest)."""

from __future__ import annotations

import pytest

from scheduler.core.models import Tier
from scheduler.runtime.app import admission_limits
from scheduler.settings import SchedulerSettings


def test_the_settings_set_every_admission_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASHSERVE_ADMISSION_MAX_ACTIVE_JOBS", "500")
    monkeypatch.setenv("HASHSERVE_ADMISSION_FLEX_SHARE", "0.5")
    limits = admission_limits(SchedulerSettings.model_validate({
        "admission_max_active_spec_mib": 8, "admission_standard_share": 0.9,
        "admission_burst_s": 4, "default_max_queued_jobs": 77,
        "default_submits_per_second": 12.5,
    }))
    assert limits.max_active_jobs == 500
    assert limits.max_active_spec_bytes == 8 * 2**20
    assert dict(limits.tier_share) == {Tier.INTERACTIVE: 1.0, Tier.STANDARD: 0.9, Tier.FLEX: 0.5}
    assert (limits.burst_s, limits.default_max_queued_jobs,
            limits.default_submits_per_second) == (4, 77, 12.5)


def test_the_defaults_are_admissions_own() -> None:
    from scheduler.api.admission import DEFAULT_LIMITS

    assert admission_limits(SchedulerSettings.model_validate({})) == DEFAULT_LIMITS
