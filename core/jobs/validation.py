"""Validation of a batch request: pure, every error names its field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.errors import InvalidInput
from core.styles import get_style

if TYPE_CHECKING:
    from core.config import Settings


@dataclass(frozen=True)
class Limits:
    max_prompts: int = 10_000
    max_tasks: int = 50_000
    max_prompt_chars: int = 4_000
    max_count_per_prompt: int = 10


@dataclass(frozen=True)
class BatchSpec:
    prompts: tuple[str, ...]
    style: str
    count_per_prompt: int

    @property
    def total_tasks(self) -> int:
        return len(self.prompts) * self.count_per_prompt


def validate_batch(
    prompts: object, style: object, count_per_prompt: object, limits: Limits
) -> BatchSpec:
    """Check a batch; raise InvalidInput naming the first bad field.

    Prompts are kept verbatim (no trimming inside, no unicode normalisation): what the
    operator wrote is what is stored and shown. Only surrounding whitespace is removed.
    """
    if not isinstance(prompts, list | tuple):
        raise InvalidInput("prompts", "must be a list of strings")
    if not prompts:
        raise InvalidInput("prompts", "must contain at least one prompt")
    if len(prompts) > limits.max_prompts:
        raise InvalidInput(
            "prompts", f"at most {limits.max_prompts} prompts per batch (got {len(prompts)})"
        )
    cleaned: list[str] = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise InvalidInput(f"prompts[{i}]", "must be a string")
        text = prompt.strip()
        if not text:
            raise InvalidInput(f"prompts[{i}]", "must not be blank")
        if len(text) > limits.max_prompt_chars:
            raise InvalidInput(
                f"prompts[{i}]",
                f"at most {limits.max_prompt_chars} characters (got {len(text)})",
            )
        if "\x00" in text:
            raise InvalidInput(f"prompts[{i}]", "must not contain NUL characters")
        cleaned.append(text)
    if not isinstance(style, str):
        raise InvalidInput("style", "must be a string")
    get_style(style)
    if isinstance(count_per_prompt, bool) or not isinstance(count_per_prompt, int):
        raise InvalidInput("count_per_prompt", "must be an integer")
    if not 1 <= count_per_prompt <= limits.max_count_per_prompt:
        raise InvalidInput(
            "count_per_prompt", f"must be between 1 and {limits.max_count_per_prompt}"
        )
    spec = BatchSpec(tuple(cleaned), style, count_per_prompt)
    if spec.total_tasks > limits.max_tasks:
        raise InvalidInput(
            "count_per_prompt",
            f"the batch would create {spec.total_tasks} images; the limit is {limits.max_tasks}",
        )
    return spec


@dataclass
class PromptLines:
    """What an operator pasted, read line by line, with what deserves a second look."""

    prompts: list[str] = field(default_factory=list)
    blank_lines: list[int] = field(default_factory=list)  # 1-based line numbers
    duplicates: dict[str, list[int]] = field(default_factory=dict)  # prompt -> line numbers


def read_prompt_lines(text: str) -> PromptLines:
    """One prompt per line. Blank lines are reported, not silently dropped; duplicates are
    reported and kept (an operator may want the same prompt twice)."""
    result = PromptLines()
    seen: dict[str, list[int]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        prompt = line.strip()
        if not prompt:
            result.blank_lines.append(number)
            continue
        result.prompts.append(prompt)
        seen.setdefault(prompt, []).append(number)
    result.duplicates = {p: lines for p, lines in seen.items() if len(lines) > 1}
    # Trailing blank lines are an artefact of pasting, not a mistake worth flagging.
    while result.blank_lines and result.blank_lines[-1] > _last_content_line(text):
        result.blank_lines.pop()
    return result


def _last_content_line(text: str) -> int:
    last = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            last = number
    return last


def limits_from_settings(settings: Settings) -> Limits:
    return Limits(
        max_prompts=settings.MAX_PROMPTS_PER_BATCH,
        max_tasks=settings.MAX_TASKS_PER_BATCH,
        max_prompt_chars=settings.MAX_PROMPT_CHARS,
        max_count_per_prompt=settings.MAX_COUNT_PER_PROMPT,
    )
