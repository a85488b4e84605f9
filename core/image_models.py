"""Which OPENAI_IMAGE_MODEL values are accepted at start: read through one function.

The list itself is core.providers.image_models' (the installed openai package's
``ImageModel``, GPT image models only, without the ones its docstring says are shut
down). A shut-down model is refused at start rather than swapped for another: a silent
swap would change what is generated and what it costs.
"""

from __future__ import annotations


def accepted_image_models() -> tuple[str, ...]:
    from core.providers.image_models import selectable_models

    return selectable_models()


def refusal_reason(value: str) -> str:
    """Why ``value`` is refused (pure; the caller names the variable and the list)."""
    from core.providers.image_models import shut_down_models

    if value in shut_down_models():
        return "is shut down (the installed openai package says so)"
    return "is not an image model this service can use"
