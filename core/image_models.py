"""Which OPENAI_IMAGE_MODEL values are accepted: read through one function.

The installed openai package's ``ImageModel`` lists the image models it knows; the ones
its docstring says are shut down or retired are left out (a submit with them would fail
at OpenAI), and so are the ones this service cannot price (core.cost.MODELS), which a
submit would refuse. The model list offered by the product (core.cost / the provider)
may change; only ``accepted_image_models`` reads it.
"""

from __future__ import annotations

from functools import cache
from typing import get_args

# openai.types.ImageModel marks these shut down / retired (gpt-image-1 on 2026-10-23,
# dall-e-2 and dall-e-3 on 2026-05-12).
RETIRED_IMAGE_MODELS = frozenset({"gpt-image-1", "dall-e-2", "dall-e-3"})


@cache
def accepted_image_models() -> tuple[str, ...]:
    from openai.types import ImageModel

    from core.cost import MODELS

    return tuple(m for m in get_args(ImageModel)
                 if m not in RETIRED_IMAGE_MODELS and m in MODELS)
