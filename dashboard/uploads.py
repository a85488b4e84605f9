"""Reading prompts from what an operator pasted or uploaded (pure, no Streamlit).

Pasted text and .txt files: one prompt per line (core.validation.read_prompt_lines).
.csv files: one prompt per row; when the first row has a ``prompt`` column it is a
header and that column is read, otherwise every row must have exactly one cell.
Blank rows and duplicates are reported the same way as for pasted text.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from core.validation import PromptLines, read_prompt_lines

MAX_UPLOAD_BYTES = 16 * 1024 * 1024


class UploadError(ValueError):
    """The uploaded file cannot be read as prompts."""


@dataclass
class PromptSource:
    """Prompts with the line (or CSV row) each came from, for messages that point at it."""

    lines: PromptLines
    line_numbers: list[int] = field(default_factory=list)
    unit: str = "line"  # "line" or "row"

    @property
    def prompts(self) -> list[str]:
        return self.lines.prompts

    def where(self, index: int) -> str:
        """'line 7' for the prompt at ``index`` of ``prompts``."""
        if 0 <= index < len(self.line_numbers):
            return f"{self.unit} {self.line_numbers[index]}"
        return f"prompt {index + 1}"


def from_text(text: str) -> PromptSource:
    lines = read_prompt_lines(text)
    numbers = [n for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    return PromptSource(lines, numbers, "line")


def from_upload(name: str, data: bytes) -> PromptSource:
    """Prompts from an uploaded .txt or .csv file; UploadError says what is wrong."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UploadError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise UploadError(f"{name}: contains NUL bytes; is it a text file?")
    if name.lower().endswith(".csv"):
        return _from_csv(name, text)
    return from_text(text)


def _from_csv(name: str, text: str) -> PromptSource:
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise UploadError(f"{name}: not valid CSV ({exc})") from None
    column = 0
    start = 0
    if rows:
        header = [cell.strip().lower() for cell in rows[0]]
        if "prompt" in header:
            column, start = header.index("prompt"), 1
    result = PromptLines()
    numbers: list[int] = []
    seen: dict[str, list[int]] = {}
    for number, row in enumerate(rows[start:], start=start + 1):
        if start == 0 and len([c for c in row if c.strip()]) > 1:
            raise UploadError(
                f"{name}: row {number} has {len(row)} cells; add a header row with a "
                "'prompt' column, or put one prompt per row")
        cell = row[column] if column < len(row) else ""
        prompt = cell.strip()
        if not prompt:
            result.blank_lines.append(number)
            continue
        result.prompts.append(prompt)
        numbers.append(number)
        seen.setdefault(prompt, []).append(number)
    result.duplicates = {p: ns for p, ns in seen.items() if len(ns) > 1}
    last = numbers[-1] if numbers else 0
    result.blank_lines = [n for n in result.blank_lines if n < last]
    return PromptSource(result, numbers, "row")
