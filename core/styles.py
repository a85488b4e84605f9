"""Style presets: named templates that wrap an operator's prompt."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import InvalidInput


@dataclass(frozen=True)
class Style:
    name: str
    label: str
    template: str  # contains "{prompt}"


STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style("none", "None (prompt as written)", "{prompt}"),
        Style(
            "product_photography",
            "Product photography",
            "Professional product photography of {prompt}, studio lighting, clean white "
            "background, sharp focus, high detail, commercial catalogue style",
        ),
        Style(
            "illustration",
            "Illustration",
            "Digital illustration of {prompt}, bold shapes, clean lines, vibrant colours, "
            "flat shading",
        ),
        Style(
            "watercolor",
            "Watercolor",
            "Watercolor painting of {prompt}, soft washes, visible paper texture, gentle "
            "colour bleeding",
        ),
        Style(
            "cinematic",
            "Cinematic",
            "Cinematic still of {prompt}, dramatic lighting, shallow depth of field, 35mm film",
        ),
    )
}


def get_style(name: str) -> Style:
    try:
        return STYLES[name]
    except KeyError:
        raise InvalidInput(
            "style", f"unknown style {name!r}; choose one of {', '.join(sorted(STYLES))}"
        ) from None


def apply_style(style_name: str, prompt: str) -> str:
    """The prompt the model receives for ``prompt`` under ``style_name``."""
    # str.replace, not str.format: a prompt with braces must not be read as a field.
    return get_style(style_name).template.replace("{prompt}", prompt)
