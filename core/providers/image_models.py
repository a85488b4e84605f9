"""Which image models can be chosen, read from the installed ``openai`` package.

``openai.types.ImageModel`` lists every image model the API knows; the module's docstring
under it says which are shut down ("- "gpt-image-1": GPT Image 1 was shut down on ..."),
so a package upgrade updates what operators see without a code change. GPT image models
only (DALL-E answers URLs and no token usage). Shut-down models stay out of new jobs; past
jobs keep their name and their cost (core.billing.prices reads rates for any model).
"""

from __future__ import annotations

import inspect
import re
import typing
from functools import cache

from openai.types import image_model

# The current model new jobs get when OPENAI_IMAGE_MODEL is unset or no longer offered.
PREFERRED_DEFAULTS = ("gpt-image-2", "gpt-image-1.5")
_GPT_IMAGE = re.compile(r"^(gpt-image-|chatgpt-image-)")
# A line of the deprecation list: - "name", "name2": <text>
_DEPRECATED_LINE = re.compile(r'^-\s+((?:"[^"]+",?\s*)+):(.*)$')
_SHUT_DOWN_WORDS = ("shut down", "retired", "removed")


def all_models() -> list[str]:
    """Every model name in the package's ImageModel Literal, in its order."""
    return [str(m) for m in typing.get_args(image_model.ImageModel)]


@cache
def shut_down_models() -> frozenset[str]:
    """Models the package's docstring says are shut down or retired."""
    source = inspect.getsource(image_model)
    gone: set[str] = set()
    for raw in source.splitlines():
        match = _DEPRECATED_LINE.match(raw.strip())
        if match and any(w in match.group(2).lower() for w in _SHUT_DOWN_WORDS):
            gone.update(re.findall(r'"([^"]+)"', match.group(1)))
    return frozenset(gone)


@cache
def selectable_models() -> tuple[str, ...]:
    """GPT image models new jobs may use: listed by the package and not shut down."""
    gone = shut_down_models()
    return tuple(m for m in all_models() if _GPT_IMAGE.match(m) and m not in gone)


def batch_models() -> tuple[str, ...]:
    """Models the Batch API accepts for /v1/images/generations: the GPT image models.
    ``chatgpt-image-latest`` is a moving alias of the ChatGPT app's model, which the
    Batch API does not take (aliases are not batchable), so it stays realtime-only."""
    return tuple(m for m in selectable_models() if m.startswith("gpt-image-"))


def default_model(configured: str | None = None) -> str:
    """``configured`` if new jobs may use it, else the first current preferred model."""
    offered = selectable_models()
    if configured in offered:
        return str(configured)
    for name in PREFERRED_DEFAULTS:
        if name in offered:
            return name
    return offered[0]


def refusal_reason(value: str) -> str:
    """Why OPENAI_IMAGE_MODEL=``value`` is refused (pure; the caller names the variable and
    the list). A shut-down model is refused rather than swapped for another: a silent swap
    would change what is generated and what it costs."""
    if value in shut_down_models():
        return "is shut down (the installed openai package says so)"
    return "is not an image model this service can use"
