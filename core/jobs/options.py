"""A job's generation options: model, size, quality, delivery mode and image options,
validated against today's models (core.providers.image_models) and the price table.
Pure: settings and the request's choices in, GenerationOptions or InvalidInput out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.billing import prices
from core.billing.prices import MODES, QUALITIES, SIZES
from core.config import Settings
from core.errors import InvalidInput
from core.providers import image_models

OUTPUT_FORMATS = ("png", "webp", "jpeg")
BACKGROUNDS = ("auto", "opaque", "transparent")
MODERATIONS = ("auto", "low")
BATCH_FALLBACKS = ("batch", "realtime")


@dataclass(frozen=True)
class GenerationOptions:
    provider: str
    model: str
    size: str
    quality: str
    # Delivery: realtime (one images call per task) or batch (OpenAI Batch API, half price).
    mode: str = "realtime"
    # Where an expired / failed / cancelled batch's unfinished tasks go.
    batch_fallback: str = "batch"
    output_format: str | None = None  # None: the API's default (png)
    output_compression: int | None = None  # 0-100, webp / jpeg only
    background: str | None = None
    moderation: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> GenerationOptions:
        model = (image_models.default_model(settings.OPENAI_IMAGE_MODEL)
                 if settings.provider_name == "openai" else "demo")
        return cls(settings.provider_name, model, settings.OPENAI_IMAGE_SIZE,
                   settings.OPENAI_IMAGE_QUALITY)

    def image_params(self) -> dict[str, Any]:
        """The optional images.generate parameters this job sets (omitted when None)."""
        params = {"output_format": self.output_format,
                  "output_compression": self.output_compression,
                  "background": self.background, "moderation": self.moderation}
        return {k: v for k, v in params.items() if v is not None}


def options_for(
    settings: Settings, *, model: str | None = None, size: str | None = None,
    quality: str | None = None, mode: str | None = None, batch_fallback: str | None = None,
    output_format: str | None = None, output_compression: int | None = None,
    background: str | None = None, moderation: str | None = None,
    confirm_unknown_price: bool = False,
) -> GenerationOptions:
    """The job's model settings: the request's choices over the configured defaults."""
    base = GenerationOptions.from_settings(settings)
    chosen_mode = mode or "realtime"
    if chosen_mode not in MODES:
        raise InvalidInput("mode", f"must be one of {', '.join(MODES)}")
    fallback = batch_fallback or "batch"
    if fallback not in BATCH_FALLBACKS:
        raise InvalidInput("batch_fallback", f"must be one of {', '.join(BATCH_FALLBACKS)}")
    extras = _image_options(output_format, output_compression, background, moderation)
    chosen_size = size or base.size
    if chosen_size not in (*SIZES, "auto"):
        raise InvalidInput("size", f"must be one of {', '.join(SIZES)} or auto")
    chosen_quality = quality or base.quality
    if chosen_quality not in (*QUALITIES, "auto"):
        raise InvalidInput("quality", f"must be one of {', '.join(QUALITIES)} or auto")
    if settings.provider_name == "demo":
        if chosen_mode == "batch":
            raise InvalidInput("mode", "batch mode needs the openai provider (OPENAI_API_KEY)")
        # The demo model ignores the model name; the job row records what ran.
        return GenerationOptions("demo", "demo", chosen_size, chosen_quality, **extras)
    chosen_model = model or base.model
    offered = (image_models.batch_models() if chosen_mode == "batch"
               else image_models.selectable_models())
    if chosen_model not in offered:
        why = ("is shut down" if chosen_model in image_models.shut_down_models()
               else "is not offered" + (" in batch mode" if chosen_mode == "batch" else ""))
        raise InvalidInput("model", f"{chosen_model!r} {why}; one of {', '.join(offered)}")
    if not prices.has_token_rates(chosen_model) and not confirm_unknown_price:
        raise InvalidInput("model", f"no price is known for {chosen_model!r}: its cost will "
                           "show as tokens; set confirm_unknown_price to use it anyway")
    return GenerationOptions("openai", chosen_model, chosen_size, chosen_quality,
                             chosen_mode, fallback, **extras)


def _image_options(output_format: str | None, output_compression: int | None,
                   background: str | None, moderation: str | None) -> dict[str, Any]:
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        raise InvalidInput("output_format", f"must be one of {', '.join(OUTPUT_FORMATS)}")
    if output_compression is not None:
        if output_format not in ("webp", "jpeg"):
            raise InvalidInput("output_compression", "applies to output_format webp or jpeg")
        if not 0 <= output_compression <= 100:
            raise InvalidInput("output_compression", "must be between 0 and 100")
    if background is not None and background not in BACKGROUNDS:
        raise InvalidInput("background", f"must be one of {', '.join(BACKGROUNDS)}")
    if background == "transparent" and output_format == "jpeg":
        raise InvalidInput("background", "transparent needs output_format png or webp")
    if moderation is not None and moderation not in MODERATIONS:
        raise InvalidInput("moderation", f"must be one of {', '.join(MODERATIONS)}")
    return {"output_format": output_format, "output_compression": output_compression,
            "background": background, "moderation": moderation}
