"""Prices: estimates before a job runs, and the billed cost of each task after it ran.

Rates live in one data file, ``core/billing/prices.csv`` (an operator points PRICES_FILE at
their own copy when OpenAI changes them), one row per figure with the date it was read and
where from:

- ``text_input_per_1m`` / ``image_input_per_1m`` / ``image_output_per_1m``: USD per
  million tokens. A task's cost is its usage (the API's ``usage`` block, stored per task)
  times these rates: what OpenAI bills, not a guess.
- ``per_image`` (size, quality): OpenAI's published cost of one output image, used only
  for the estimate before submitting. A combination without a published figure has no
  estimate (the dashboard asks for a confirmation then).

Batch-mode requests are billed at half price (BATCH_DISCOUNT). A model without token
rates can still be used after an explicit confirmation; its cost is shown as tokens until
a rate is added. The demo model costs nothing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path

from core.errors import ConfigError

DEFAULT_PRICES_FILE = Path(__file__).parent / "prices.csv"
BATCH_DISCOUNT = Decimal("0.5")  # the Batch API bills 50 % of the realtime price
_PER_MILLION = Decimal(1_000_000)
TOKEN_RATES = ("text_input_per_1m", "image_input_per_1m", "image_output_per_1m")
RATE_KINDS = (*TOKEN_RATES, "per_image")

_SQUARE = "1024x1024"
_TALL = "1024x1536"
_WIDE = "1536x1024"
SIZES = [_SQUARE, _TALL, _WIDE]
QUALITIES = ["low", "medium", "high"]
MODES = ("realtime", "batch")


@dataclass(frozen=True)
class TokenRates:
    text_input_per_1m: Decimal
    image_input_per_1m: Decimal
    image_output_per_1m: Decimal


@dataclass(frozen=True)
class Usage:
    """Tokens one task was billed for."""

    input_tokens: int  # text and image input together, as the API reports them
    output_tokens: int
    input_image_tokens: int = 0

    @property
    def input_text_tokens(self) -> int:
        return max(0, self.input_tokens - self.input_image_tokens)


@dataclass(frozen=True)
class PriceTable:
    source: str
    tokens: dict[str, TokenRates] = field(default_factory=dict)
    per_image: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        return sorted(set(self.tokens) | {m for m, _, _ in self.per_image})


def _decimal(value: str, where: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ConfigError(f"PRICES_FILE {where}: usd {value!r} is not a number") from None
    if number < 0:
        raise ConfigError(f"PRICES_FILE {where}: usd must be >= 0")
    return number


@cache
def load_prices(path: str | None = None) -> PriceTable:
    """The price table in ``path`` (default: the shipped file). Bad rows are a
    ConfigError naming the file's line and column."""
    file = Path(path) if path else DEFAULT_PRICES_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"PRICES_FILE {file}: cannot be read ({exc.strerror})") from None
    partial: dict[str, dict[str, Decimal]] = {}
    per_image: dict[tuple[str, str, str], Decimal] = {}
    reader = csv.DictReader(text.splitlines())
    need = {"model", "rate", "size", "quality", "usd", "as_of", "source"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise ConfigError(f"PRICES_FILE {file}: header must be {','.join(sorted(need))}")
    for line_no, row in enumerate(reader, start=2):
        where = f"{file.name} line {line_no}"
        model, rate = (row["model"] or "").strip(), (row["rate"] or "").strip()
        if not model or rate not in RATE_KINDS:
            raise ConfigError(f"PRICES_FILE {where}: rate must be one of "
                              f"{', '.join(RATE_KINDS)} with a model")
        if not (row["as_of"] or "").strip() or not (row["source"] or "").strip():
            raise ConfigError(f"PRICES_FILE {where}: as_of and source are required")
        usd = _decimal((row["usd"] or "").strip(), where)
        if rate == "per_image":
            per_image[(model, row["size"].strip(), row["quality"].strip())] = usd
        else:
            partial.setdefault(model, {})[rate] = usd
    tokens = {}
    for model, rates in partial.items():
        missing = [r for r in TOKEN_RATES if r not in rates]
        if missing:
            raise ConfigError(f"PRICES_FILE {file.name}: {model} lacks {', '.join(missing)}")
        tokens[model] = TokenRates(**rates)
    return PriceTable(str(file), tokens, per_image)


def prices(path: str | None = None) -> PriceTable:
    """The table in use: PRICES_FILE when set, else the shipped one."""
    if path is None:
        from core.config import get_settings

        path = get_settings().PRICES_FILE
    return load_prices(path)


def _mode_factor(mode: str) -> Decimal:
    return BATCH_DISCOUNT if mode == "batch" else Decimal(1)


def price_per_image(provider: str, model: str, size: str, quality: str, *,
                    mode: str = "realtime", table: PriceTable | None = None) -> Decimal | None:
    """Estimated USD per image, 0 for the demo model, None when no published figure
    exists for the combination (``auto`` size or quality included: billed as what the
    model picks, so it cannot be known in advance)."""
    if provider == "demo":
        return Decimal("0")
    table = table or prices()
    if size == "auto" or quality == "auto":
        # Billed as what the model picks: budget for the dearest published combination.
        known = [p for (m, s, qy), p in table.per_image.items() if m == model
                 and size in ("auto", s) and quality in ("auto", qy)]
        price = max(known) if known else None
    else:
        price = table.per_image.get((model, size, quality))
    return None if price is None else price * _mode_factor(mode)


def estimate_cost_usd(provider: str, model: str, size: str, quality: str, images: int, *,
                      mode: str = "realtime", table: PriceTable | None = None
                      ) -> Decimal | None:
    price = price_per_image(provider, model, size, quality, mode=mode, table=table)
    if price is None:
        return None
    return (price * images).quantize(Decimal("0.0001"))


def has_token_rates(model: str, table: PriceTable | None = None) -> bool:
    return model in (table or prices()).tokens


def task_cost_usd(model: str, usage: Usage, *, mode: str = "realtime",
                  table: PriceTable | None = None) -> Decimal | None:
    """What one task was billed: text input, image input and image output tokens times
    the model's rates (half in batch mode). None without rates for the model. Exact
    (no rounding), so a job's total is exactly the sum of its tasks."""
    rates = (table or prices()).tokens.get(model)
    if rates is None:
        return None
    usd = (Decimal(usage.input_text_tokens) * rates.text_input_per_1m
           + Decimal(usage.input_image_tokens) * rates.image_input_per_1m
           + Decimal(usage.output_tokens) * rates.image_output_per_1m) / _PER_MILLION
    return usd * _mode_factor(mode)


REALTIME_IMAGE_S = 40.0  # a typical GPT image call (10-80 s)


def expected_wait(mode: str, images: int, concurrency: int = 5) -> str:
    """What an operator should expect, in words, for the dashboard's side-by-side view."""
    if mode == "batch":
        return "minutes to hours; at most 24 h (OpenAI's batch completion window)"
    minutes = images * REALTIME_IMAGE_S / 60 / max(1, concurrency)
    return f"about {max(1, round(minutes))} min ({concurrency} in flight, ~40 s per image)"
