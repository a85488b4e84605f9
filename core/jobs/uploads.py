"""Reading prompts from what an operator pasted or uploaded (pure, no Streamlit).

Pasted text and .txt files: one prompt per line (core.jobs.validation.read_prompt_lines).
.csv files (comma, semicolon or tab): one prompt per row; when the first row names a
prompt column (``prompt``, ``Prompt Text``, ``description``, ...) it is a header and that
column is read, otherwise every row must have exactly one cell. The operator can also
say that the first row is a header (a single column with any name): a header is never
read as a prompt that would be billed. Unquoted commas in the prompt column stay in it.
Blank rows and duplicates are reported the same way as for pasted text.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from core.jobs.validation import PromptLines, read_prompt_lines

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


# Header cells that name the prompt column (compared lower-case, "_"/"-" as spaces).
PROMPT_HEADERS = ("prompt", "prompts", "prompt text", "text", "description", "caption",
                  "image prompt", "subject")
DELIMITERS = (",", ";", "\t")


def _norm(cell: str) -> str:
    return " ".join(cell.strip().lower().replace("_", " ").replace("-", " ").split())


def prompt_column(header: list[str]) -> int | None:
    """The index of the column a header row names as the prompt, if any."""
    names = [_norm(c) for c in header]
    for wanted in PROMPT_HEADERS:
        if wanted in names:
            return names.index(wanted)
    for i, name in enumerate(names):  # "Prompt (EN)", "my prompts"
        if "prompt" in name.split() or "prompts" in name.split():
            return i
    return None


def sniff_delimiter(text: str) -> str:
    """The delimiter of a CSV: the one that splits the first line into a header naming
    a prompt column, else ";" or tab when the first line has those and no comma (an
    export from a spreadsheet in a comma-decimal locale), else ","."""
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    for delimiter in DELIMITERS:
        row = next(csv.reader([first], delimiter=delimiter), [])
        if len(row) > 1 and prompt_column(row) is not None:
            return delimiter
    for delimiter in (";", "\t"):
        if delimiter in first and "," not in first:
            return delimiter
    return ","


def from_upload(name: str, data: bytes, *, header: bool | None = None) -> PromptSource:
    """Prompts from an uploaded .txt or .csv file; UploadError says what is wrong.
    ``header``: whether a CSV's first row is a header (None: detect it)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UploadError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise UploadError(f"{name}: contains NUL bytes; is it a text file?")
    if name.lower().endswith(".csv"):
        return _from_csv(name, text, header)
    return from_text(text)


def csv_first_row(data: bytes) -> list[str]:
    """The first row of a CSV upload as cells (for asking whether it is a header)."""
    text = data.decode("utf-8-sig", errors="replace")
    return next(csv.reader(io.StringIO(text, newline=""),
                           delimiter=sniff_delimiter(text)), [])


def _from_csv(name: str, text: str, header: bool | None) -> PromptSource:
    delimiter = sniff_delimiter(text)
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise UploadError(f"{name}: not valid CSV ({exc})") from None
    column = 0
    start = 0
    width = 1
    if rows:
        named = prompt_column(rows[0])
        if named is not None and header is not False:
            column, start, width = named, 1, len(rows[0])
        elif header:
            start, width = 1, len(rows[0])
            if width > 1:
                raise UploadError(
                    f"{name}: the header row has no prompt column ({', '.join(rows[0])}); "
                    "name it 'prompt'")
    result = PromptLines()
    numbers: list[int] = []
    seen: dict[str, list[int]] = {}
    for number, row in enumerate(rows[start:], start=start + 1):
        if start == 0 and len([c for c in row if c.strip()]) > 1:
            raise UploadError(
                f"{name}: row {number} has {len(row)} cells; add a header row with a "
                "'prompt' column, or put one prompt per row")
        # Cells beyond the header's width are the prompt's own unquoted delimiters
        # ("a green teapot, studio light"): they belong to the prompt column.
        extra = max(len(row) - width, 0)
        cell = (delimiter.join(row[column:column + extra + 1]) if column < len(row)
                else "")
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
