"""Image providers: the demo model (offline) and OpenAI's images API."""

from __future__ import annotations

from core.config import Settings, get_settings
from core.providers.base import GeneratedImage, ImageProvider, ImageRequest

__all__ = ["GeneratedImage", "ImageProvider", "ImageRequest", "get_provider"]

_providers: dict[tuple[str, int], ImageProvider] = {}


def _build(name: str, settings: Settings) -> ImageProvider:
    if name == "demo":
        from core.providers.demo import DemoProvider

        return DemoProvider.from_settings(settings)
    if name == "openai":
        from core.providers.openai_images import OpenAIProvider

        return OpenAIProvider.from_settings(settings)
    raise ValueError(f"unknown image provider {name!r}")


def get_provider(name: str | None = None, settings: Settings | None = None) -> ImageProvider:
    """The provider called ``name`` (default: IMAGE_PROVIDER), built once per settings."""
    settings = settings or get_settings()
    key = (name or settings.provider_name, id(settings))
    if key not in _providers:
        _providers[key] = _build(key[0], settings)
    return _providers[key]


async def close_providers() -> None:
    for provider in list(_providers.values()):
        await provider.aclose()
    _providers.clear()
