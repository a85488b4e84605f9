"""Cloud Run cost model (core.billing.cost_model): pure arithmetic against the guide's estimate."""

from __future__ import annotations

import pytest

from core.billing.cost_model import (
    GUIDE_INSTANCE,
    GUIDE_USD_PER_1000,
    Instance,
    comparison,
    cost_per_1000_images,
)


def test_the_guides_setup_reproduces_its_estimate() -> None:
    # One 80 s task per 2 vCPU / 2 GiB instance: $4.24 per 1,000 images (+ request fees).
    estimate = cost_per_1000_images(GUIDE_INSTANCE, image_s=80, cpu_s_per_task=0.02)
    assert estimate.usd_per_1000 == pytest.approx(GUIDE_USD_PER_1000, abs=0.001)
    assert estimate.effective_concurrency == 1


def test_concurrency_divides_the_instance_time() -> None:
    one = cost_per_1000_images(Instance(1, 1, 1), image_s=80, cpu_s_per_task=0.02)
    eighty = cost_per_1000_images(Instance(1, 1, 80), image_s=80, cpu_s_per_task=0.02)
    assert eighty.instance_s_per_image == pytest.approx(1.0)
    assert eighty.usd_per_1000 < one.usd_per_1000 / 50


def test_cpu_per_task_caps_the_useful_concurrency() -> None:
    # 2 CPU-seconds per 10 s task: 1 vCPU at 60 % holds 3 deliveries, not 80.
    estimate = cost_per_1000_images(Instance(1, 1, 80), image_s=10, cpu_s_per_task=2.0)
    assert estimate.effective_concurrency == pytest.approx(3.0)
    assert estimate.cpu_utilisation == pytest.approx(0.6)


def test_free_cpu_is_capped_by_the_configured_concurrency() -> None:
    estimate = cost_per_1000_images(Instance(1, 1, 80), image_s=80, cpu_s_per_task=0.0)
    assert estimate.effective_concurrency == 80


def test_bad_inputs_refused() -> None:
    with pytest.raises(ValueError):
        cost_per_1000_images(Instance(1, 1, 0), image_s=80, cpu_s_per_task=0.01)
    with pytest.raises(ValueError):
        cost_per_1000_images(Instance(1, 1, 1), image_s=0, cpu_s_per_task=0.01)


def test_comparison_names_both_setups() -> None:
    result = comparison(cpu_s_per_task=0.03)
    low, high = result.values()
    assert high.usd_per_1000 < low.usd_per_1000
