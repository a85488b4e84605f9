"""The image provider interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID


@dataclass(frozen=True)
class ImageRequest:
    prompt: str  # the styled prompt the model receives
    model: str
    size: str  # "1024x1024"
    quality: str
    task_id: UUID
    attempt: int
    # Identifies the picture (prompt, style, image index) so a redelivery draws the same one.
    seed_key: str = ""
    # The job's optional images.generate parameters (output_format, background, ...).
    image_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    content_type: str = "image/png"
    input_tokens: int | None = None
    output_tokens: int | None = None


class ImageProvider(Protocol):
    name: str

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        """Make one image; raise core.errors.TaskFailure for a classified failure."""
        ...

    async def aclose(self) -> None: ...
