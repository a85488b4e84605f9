from __future__ import annotations

import pytest

from core.errors import InvalidInput
from core.jobs.validation import Limits, read_prompt_lines, validate_batch
from core.styles import STYLES, apply_style

LIMITS = Limits(max_prompts=5, max_tasks=8, max_prompt_chars=30, max_count_per_prompt=4)


@pytest.mark.parametrize(
    ("prompts", "style", "count", "field"),
    [
        ([], "none", 1, "prompts"),  # empty list
        ("a cat", "none", 1, "prompts"),  # not a list
        (["a", "  "], "none", 1, "prompts[1]"),  # blank prompt, named by index
        (["x" * 31], "none", 1, "prompts[0]"),  # too long
        (["a"] * 6, "none", 1, "prompts"),  # too many prompts
        ([3], "none", 1, "prompts[0]"),  # wrong type
        (["a"], "cubism", 1, "style"),  # unknown style
        (["a"], "none", 0, "count_per_prompt"),  # out of range
        (["a"], "none", 5, "count_per_prompt"),
        (["a"], "none", True, "count_per_prompt"),  # bool is not a count
        (["a", "b", "c"], "none", 3, "count_per_prompt"),  # 9 tasks > max_tasks
        (["a\x00b"], "none", 1, "prompts[0]"),
    ],
)
def test_invalid_batches_name_their_field(
    prompts: object, style: object, count: object, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_batch(prompts, style, count, LIMITS)
    assert caught.value.field == field
    assert caught.value.message.startswith(field + ":")


def test_prompts_are_kept_verbatim_apart_from_surrounding_space() -> None:
    spec = validate_batch(["  Robert'); DROP TABLE x;-- ", "猫 🐈 café"], "none", 2, LIMITS)
    assert spec.prompts == ("Robert'); DROP TABLE x;--", "猫 🐈 café")
    assert spec.total_tasks == 4


def test_read_prompt_lines_reports_blanks_and_duplicates() -> None:
    lines = read_prompt_lines("a cat\n\nA dog\na cat\n   \nbird\n\n\n")
    assert lines.prompts == ["a cat", "A dog", "a cat", "bird"]
    assert lines.blank_lines == [2, 5]  # trailing blank lines are not flagged
    assert lines.duplicates == {"a cat": [1, 4]}


def test_styles_wrap_the_prompt_and_braces_are_literal() -> None:
    assert {"product_photography", "illustration", "watercolor", "none"} <= set(STYLES)
    assert apply_style("none", "a {b}") == "a {b}"
    assert "a {b}" in apply_style("watercolor", "a {b}")
    with pytest.raises(InvalidInput, match="style"):
        apply_style("nope", "x")
