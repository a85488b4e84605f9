"""Cloud Run infrastructure cost per 1,000 images: one delivery per instance vs many.

An image takes 10-80 s, nearly all of it waiting for the model. With request-based billing
Cloud Run bills an instance while it serves at least one request, so an instance that
serves C deliveries at once bills each image about 1/C of its wall time. What caps C is
the CPU the worker really spends per task (HTTP, claim, thumbnail, upload, commit), which
``bench/cost.py`` measures; the model keeps the instance's average CPU under a target
utilisation. Pure: prices and measurements in, dollars out.

Prices (Cloud Run, request-based billing, Tier 1 regions such as us-central1, from
https://cloud.google.com/run/pricing; free tier ignored): $0.000024 per vCPU-second,
$0.0000025 per GiB-second, $0.40 per million requests. The deployment guide's estimate,
$4.24 per 1,000 images, is 80 s x (2 vCPU x $0.000024 + 2 GiB x $0.0000025) per image:
one task per 2 vCPU / 2 GiB instance.
"""

from __future__ import annotations

from dataclasses import dataclass

USD_PER_VCPU_S = 0.000024
USD_PER_GIB_S = 0.0000025
USD_PER_REQUEST = 0.40 / 1_000_000
GUIDE_USD_PER_1000 = 4.24
GUIDE_IMAGE_S = 80.0
# Keep an instance's average CPU under this, so bursts (several thumbnails at once) and
# the event loop's latency stay comfortable; Cloud Run's autoscaler targets about 60 %.
TARGET_CPU_UTILISATION = 0.6


@dataclass(frozen=True)
class Instance:
    vcpu: float
    memory_gib: float
    concurrency: int  # Cloud Run's --concurrency: deliveries served at once


@dataclass(frozen=True)
class CostEstimate:
    usd_per_1000: float
    effective_concurrency: float  # deliveries in flight per instance the CPU allows
    cpu_utilisation: float  # average vCPU share busy at that concurrency
    instance_s_per_image: float


def cost_per_1000_images(
    instance: Instance,
    *,
    image_s: float,
    cpu_s_per_task: float,
    target_utilisation: float = TARGET_CPU_UTILISATION,
) -> CostEstimate:
    """Infrastructure cost of 1,000 images when each delivery lasts ``image_s`` seconds and
    costs the worker ``cpu_s_per_task`` CPU-seconds (measured), with instances kept full."""
    if image_s <= 0 or instance.concurrency < 1 or instance.vcpu <= 0:
        raise ValueError("image_s, concurrency and vcpu must be positive")
    # CPU bound on concurrency: C deliveries of image_s each use C * cpu / image_s vCPU.
    cpu_cap = (instance.vcpu * target_utilisation * image_s / cpu_s_per_task
               if cpu_s_per_task > 0 else float("inf"))
    concurrency = max(1.0, min(float(instance.concurrency), cpu_cap))
    instance_s = image_s / concurrency
    usd_per_image = (instance_s * (instance.vcpu * USD_PER_VCPU_S
                                   + instance.memory_gib * USD_PER_GIB_S)
                     + USD_PER_REQUEST)
    utilisation = concurrency * cpu_s_per_task / image_s / instance.vcpu
    return CostEstimate(usd_per_1000=usd_per_image * 1000,
                        effective_concurrency=concurrency,
                        cpu_utilisation=utilisation, instance_s_per_image=instance_s)


# The two set-ups docs/performance.md compares ("Cost on Cloud Run").
GUIDE_INSTANCE = Instance(vcpu=2, memory_gib=2, concurrency=1)
CONCURRENT_INSTANCE = Instance(vcpu=1, memory_gib=1, concurrency=80)


def comparison(cpu_s_per_task: float, image_s: float = GUIDE_IMAGE_S
               ) -> dict[str, CostEstimate]:
    """The guide's set-up (one task per 2 vCPU instance) vs 80 deliveries per 1 vCPU."""
    return {
        "concurrency 1 (guide: 2 vCPU, 2 GiB)": cost_per_1000_images(
            GUIDE_INSTANCE, image_s=image_s, cpu_s_per_task=cpu_s_per_task),
        "concurrency 80 (1 vCPU, 1 GiB)": cost_per_1000_images(
            CONCURRENT_INSTANCE, image_s=image_s, cpu_s_per_task=cpu_s_per_task),
    }
