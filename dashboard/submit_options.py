"""The Submit page's model part (OpenAI only): delivery mode, today's models, size and
quality, image options, both modes' cost and wait side by side, and what must be
confirmed before a submit (a high estimate, `auto` options, a model without known rates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import pandas as pd
import streamlit as st

from core.billing import prices
from core.config import Settings
from core.jobs import lifecycle
from core.providers import image_models
from dashboard import ui

MODE_LABELS = {"realtime": "Realtime (one call per image)",
               "batch": "Batch (OpenAI Batch API: half price, within 24 h)"}


@dataclass(frozen=True)
class Choice:
    mode: str
    model: str
    size: str
    quality: str
    options: dict[str, object] = field(default_factory=dict)  # lifecycle.options_for keywords


def _index(values: list[str] | tuple[str, ...], wanted: str | None) -> int:
    return list(values).index(wanted) if wanted in values else 0


def render(settings: Settings) -> Choice:
    mode = st.radio("Delivery", list(MODE_LABELS), format_func=MODE_LABELS.__getitem__,
                    horizontal=True, key="mode")
    offered = image_models.batch_models() if mode == "batch" else image_models.selectable_models()
    default = image_models.default_model(settings.OPENAI_IMAGE_MODEL)
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Model", offered, key="model", index=_index(offered, default),
                         help="The GPT image models of the installed openai package that "
                              "are not shut down" + (" and that the Batch API accepts"
                                                     if mode == "batch" else ""))
    sizes = [*prices.SIZES, "auto"]
    size = c2.selectbox("Size", sizes, key="size",
                        index=_index(sizes, settings.OPENAI_IMAGE_SIZE))
    qualities = [*prices.QUALITIES, "auto"]
    quality = c3.selectbox("Quality", qualities, key="quality",
                           index=_index(qualities, settings.OPENAI_IMAGE_QUALITY))
    with st.expander("Image options"):
        o1, o2, o3, o4 = st.columns(4)
        output_format = o1.selectbox("Output format", [None, *lifecycle.OUTPUT_FORMATS],
                                     format_func=lambda v: v or "default (png)",
                                     key="output_format")
        compression = None
        if output_format in ("webp", "jpeg"):
            compression = int(o2.number_input("Compression %", min_value=0, max_value=100,
                                              value=100, step=5, key="output_compression"))
        background = o3.selectbox("Background", [None, *lifecycle.BACKGROUNDS],
                                  format_func=lambda v: v or "default (auto)", key="background")
        moderation = o4.selectbox("Moderation", [None, *lifecycle.MODERATIONS],
                                  format_func=lambda v: v or "default (auto)", key="moderation")
    options: dict[str, object] = {"output_format": output_format,
                                  "output_compression": compression,
                                  "background": background, "moderation": moderation}
    if mode == "batch":
        fallback = st.radio("If a batch expires or fails, its unfinished images go",
                            list(lifecycle.BATCH_FALLBACKS), horizontal=True, key="batch_fallback",
                            format_func={"batch": "into a new batch",
                                         "realtime": "to realtime (full price)"}.__getitem__)
        options["batch_fallback"] = fallback
    if not prices.has_token_rates(str(model)):
        options["confirm_unknown_price"] = st.checkbox(
            f"No price is known for {model}: its cost will show as tokens until a rate is "
            "added to PRICES_FILE. Use it anyway", key="confirm_unknown_price")
    return Choice(str(mode), str(model), str(size), str(quality), options)


def compare_modes(options: lifecycle.GenerationOptions, images: int, settings: Settings) -> None:
    """Both delivery modes' estimate and expected wait, side by side."""
    rows = []
    for mode in prices.MODES:
        estimate = prices.estimate_cost_usd(options.provider, options.model, options.size,
                                          options.quality, images, mode=mode)
        rows.append({"delivery": mode + (" (chosen)" if mode == options.mode else ""),
                     "estimated cost": ui.money(estimate),
                     "expected wait": prices.expected_wait(mode, images,
                                                         settings.LOCAL_MAX_CONCURRENCY)})
    st.table(pd.DataFrame(rows).set_index("delivery"))


def confirmations(options: lifecycle.GenerationOptions, estimate: Decimal | None,
                  settings: Settings) -> list[str]:
    """Why this submit needs an explicit confirmation (empty: it does not)."""
    reasons = []
    if estimate is None:
        reasons.append("the cost cannot be estimated for these options")
    elif estimate > Decimal(str(settings.COST_CONFIRM_USD)):
        reasons.append(f"the estimate {ui.money(estimate)} is above "
                       f"{ui.money(settings.COST_CONFIRM_USD)}")
    auto = [name for name, value in (("size", options.size), ("quality", options.quality))
            if value == "auto"]
    if auto:
        reasons.append(f"{' and '.join(auto)} 'auto' is billed as what the model picks")
    return reasons
