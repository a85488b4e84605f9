"""Prices: one table, keyed by (model, size, quality), in USD per image.

Source: OpenAI's per-image prices for GPT image models (developers.openai.com pricing,
"Image generation"), checked 2026-11-29 against several listings of that page: one
output image at 1024x1024 (square) and 1024x1536 / 1536x1024 (portrait / landscape), at
low, medium and high quality. gpt-image-1.5 is about 20 % cheaper than gpt-image-1;
gpt-image-1 was shut down on 2026-10-23 and stays here for the cost of past jobs. The
input (prompt) tokens are billed on top and are not in these rows. Keep the table in step
with the pricing page when a model is added. The demo model costs nothing.
"""

from __future__ import annotations

from decimal import Decimal

_SQUARE = "1024x1024"
_TALL = "1024x1536"
_WIDE = "1536x1024"

PRICES_USD: dict[tuple[str, str, str], Decimal] = {}


def _add(model: str, table: dict[str, tuple[str, str, str]]) -> None:
    for quality, (square, tall, wide) in table.items():
        PRICES_USD[(model, _SQUARE, quality)] = Decimal(square)
        PRICES_USD[(model, _TALL, quality)] = Decimal(tall)
        PRICES_USD[(model, _WIDE, quality)] = Decimal(wide)


_add("gpt-image-1", {
    "low": ("0.011", "0.016", "0.016"),
    "medium": ("0.042", "0.063", "0.063"),
    "high": ("0.167", "0.25", "0.25"),
})
_add("gpt-image-1.5", {
    "low": ("0.009", "0.013", "0.013"),
    "medium": ("0.034", "0.05", "0.05"),
    "high": ("0.133", "0.2", "0.2"),
})
_add("gpt-image-1-mini", {
    "low": ("0.005", "0.006", "0.006"),
    "medium": ("0.011", "0.015", "0.015"),
    "high": ("0.036", "0.052", "0.052"),
})

MODELS = sorted({model for model, _, _ in PRICES_USD})
SIZES = [_SQUARE, _TALL, _WIDE]
QUALITIES = ["low", "medium", "high"]


def price_per_image(provider: str, model: str, size: str, quality: str) -> Decimal | None:
    """USD per image, 0 for the demo model, None when the table does not know the combo."""
    if provider == "demo":
        return Decimal("0")
    # "auto" quality is billed as what the model picks; budget for the dearest.
    if quality == "auto":
        known = [p for (m, s, _), p in PRICES_USD.items() if m == model and s == size]
        return max(known) if known else None
    return PRICES_USD.get((model, size, quality))


def estimate_cost_usd(
    provider: str, model: str, size: str, quality: str, images: int
) -> Decimal | None:
    price = price_per_image(provider, model, size, quality)
    if price is None:
        return None
    return (price * images).quantize(Decimal("0.0001"))
