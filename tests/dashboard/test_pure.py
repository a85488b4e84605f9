"""The dashboard's pure pieces: reading uploads, chart buckets, export names and cells,
formatting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from uuid import UUID
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from core.jobs.export import image_file_name, safe_cell
from core.jobs.reports import (
    SeriesPoint,
    ThroughputPoint,
    bucket_seconds,
    burn_up,
    fill_buckets,
    per_minute,
)
from core.jobs.uploads import UploadError, from_text, from_upload
from dashboard import ui

TASK = UUID("12345678-1234-5678-1234-567812345678")


def test_pasted_text_points_at_lines() -> None:
    source = from_text("a chair\n\n  a lamp  \na chair\n\n")
    assert source.prompts == ["a chair", "a lamp", "a chair"]
    assert source.lines.blank_lines == [2]  # trailing blank lines are not flagged
    assert source.lines.duplicates == {"a chair": [1, 4]}
    assert [source.where(i) for i in range(3)] == ["line 1", "line 3", "line 4"]


@pytest.mark.parametrize(("name", "data", "prompts", "blank"), [
    # header with a prompt column: that column, wherever it is
    ("p.csv", b"id,Prompt\n1,a kite\n2,\n3,\"a boat, blue\"\n", ["a kite", "a boat, blue"], [3]),
    # no header, one cell per row: each row
    ("p.csv", b"a kite\na boat\n", ["a kite", "a boat"], []),
    # a quoted cell may hold a newline: one prompt
    ("p.csv", b'prompt\n"two\nlines"\n', ["two\nlines"], []),
    # a byte-order mark from a spreadsheet does not hide the header
    ("p.csv", "\ufeffprompt\nà la carte\n".encode(), ["à la carte"], []),
    # unquoted commas after a header stay in the prompt (were cut at the first comma)
    ("p.csv", b"prompt\na green teapot, studio light\n", ["a green teapot, studio light"],
     []),
    ("p.csv", b"id,prompt\n1,a kite, red, high\n", ["a kite, red, high"], []),
    # header names other than "prompt" are headers, never billed prompts
    ("p.csv", b"prompts\na kite\n", ["a kite"], []),
    ("p.csv", b"Prompt Text\na kite\n", ["a kite"], []),
    ("p.csv", b"id,description\n1,a kite\n", ["a kite"], []),
    # semicolon-separated (a spreadsheet in a comma-decimal locale), commas are text
    ("p.csv", b"id;prompt\n1;a kite, red\n2;a boat\n", ["a kite, red", "a boat"], []),
    ("p.csv", b"prompt;id\na kite, red;1\n", ["a kite, red"], []),
    # .txt: one prompt per line, commas are text
    ("p.txt", b"a kite, red\n\na boat\n", ["a kite, red", "a boat"], [2]),
])
def test_uploads(name: str, data: bytes, prompts: list[str], blank: list[int]) -> None:
    source = from_upload(name, data)
    assert source.prompts == prompts
    assert source.lines.blank_lines == blank


def test_a_single_column_header_the_operator_names_is_not_a_prompt() -> None:
    data = b"My ideas\na kite\na boat\n"
    assert from_upload("p.csv", data).prompts == ["My ideas", "a kite", "a boat"]
    assert from_upload("p.csv", data, header=True).prompts == ["a kite", "a boat"]
    # a recognised header can be declared not to be one
    assert from_upload("p.csv", b"prompt\na kite\n", header=False).prompts == [
        "prompt", "a kite"]


@pytest.mark.parametrize(("name", "data", "message"), [
    ("p.csv", b"a,b\nc,d\n", "row 1 has 2 cells"),       # columns but no prompt header
    ("p.txt", b"\xff\xfe\x00a", "not UTF-8"),             # binary
    ("p.txt", b"a\x00b", "NUL"),                          # NUL bytes
])
def test_upload_errors(name: str, data: bytes, message: str) -> None:
    with pytest.raises(UploadError, match=message):
        from_upload(name, data)


def test_csv_rows_are_numbered_as_the_file_shows_them() -> None:
    source = from_upload("p.csv", b"prompt\na\n\nb\n")
    assert source.where(1) == "row 4"


@pytest.mark.parametrize(("span_s", "expected"), [
    (0, 1),            # nothing yet: the finest bucket
    (100, 1),          # under two minutes: per second
    (1000, 10),        # ~17 min: 10 s buckets (100 points)
    (3600, 30),        # an hour: 30 s (120 points)
    (86400, 900),      # a day: 15 min
    (10**8, 864000),   # beyond the table: whole days
])
def test_bucket_seconds(span_s: float, expected: int) -> None:
    assert bucket_seconds(span_s) == expected
    assert span_s / bucket_seconds(span_s) <= 120


def test_burn_up_final_state_has_width_and_remaining_counts_only_existing_jobs() -> None:
    t0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    hold = timedelta(seconds=10)
    # Job A (5 tasks) at t0, all done by t0+20 s; job B (3 tasks) appears at t0+30 s.
    finished = [(t0 + timedelta(seconds=20), 5, 0, 0), (t0 + timedelta(seconds=40), 7, 1, 0)]
    created = [(t0, 5), (t0 + timedelta(seconds=30), 3)]
    points = burn_up(finished, created, end=t0 + timedelta(seconds=40), hold=hold)
    assert [(p.bucket - t0).seconds for p in points] == [0, 20, 30, 40, 50]
    assert [p.remaining for p in points] == [5, 0, 3, 0, 0]  # B's tasks not before B
    # The final state is drawn up to a later point: it has width, and it is "done".
    assert points[-1] == SeriesPoint(t0 + timedelta(seconds=50), 7, 1, 0, 0)
    assert points[-2].bucket < points[-1].bucket
    # Nothing finished yet: flat at the job's size from its creation, held to the end.
    flat = burn_up([], [(t0, 4)], end=t0 + timedelta(seconds=5), hold=hold)
    assert [(p.remaining, p.succeeded) for p in flat] == [(4, 0), (4, 0)]
    assert flat[-1].bucket == t0 + timedelta(seconds=15)


def test_throughput_covers_the_whole_hour() -> None:
    now = datetime(2026, 12, 1, 16, 37, 30, tzinfo=UTC)
    one = [ThroughputPoint(datetime(2026, 12, 1, 16, 35, tzinfo=UTC), 4, 1)]
    filled = fill_buckets(one, now=now, window_s=3600, bucket_s=60)
    assert len(filled) == 60
    assert filled[-1].bucket == datetime(2026, 12, 1, 16, 37, tzinfo=UTC)
    assert filled[-1].bucket - filled[0].bucket == timedelta(minutes=59)
    assert [p for p in filled if p.succeeded] == one


def test_times_are_shown_in_the_operators_zone() -> None:
    # What psycopg returns when the session TimeZone is America/New_York.
    new_york = datetime(2026, 12, 1, 11, 37, tzinfo=ZoneInfo("America/New_York"))
    assert ui.when(new_york, ZoneInfo("UTC")) == "2026-12-01 16:37:00"
    assert ui.when(new_york, ZoneInfo("Europe/Paris")) == "2026-12-01 17:37:00"
    assert ui.when(None, ZoneInfo("UTC")) == ""
    assert ui.pick_zone("Asia/Tokyo", "Europe/Paris").key == "Asia/Tokyo"
    assert ui.pick_zone(None, "Europe/Paris").key == "Europe/Paris"
    assert ui.pick_zone(None, "Not/AZone").key == "UTC"
    ms = ui.wall_clock_ms(pd.Series([new_york]), ZoneInfo("UTC"))
    assert int(ms.iloc[0]) == int(datetime(2026, 12, 1, 16, 37, tzinfo=UTC).timestamp() * 1000)


def test_empty_cells_are_empty_not_none() -> None:
    rows = ui.cells([{"code": None, "n": 1, "ms": None}, {"code": "x", "n": 2, "ms": 850}])
    assert rows == [{"code": "", "n": 1, "ms": ""}, {"code": "x", "n": 2, "ms": "850"}]
    assert "None" not in pd.DataFrame(rows).to_string()


def test_counts_moved_and_table_height() -> None:
    shown = SimpleNamespace(status="running", failed_tasks=0)
    assert not ui.counts_moved(shown, SimpleNamespace(status="running", failed_tasks=0))
    assert ui.counts_moved(shown, SimpleNamespace(status="running", failed_tasks=2))
    assert ui.counts_moved(shown, SimpleNamespace(status="completed", failed_tasks=0))
    assert ui.table_height(50) >= 50 * ui.ROW_PX


def test_per_minute() -> None:
    assert per_minute(10, 60.0) == 10.0
    assert per_minute(10, None) is None and per_minute(10, 0.0) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("=1+1", "'=1+1"), ("+cmd", "'+cmd"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"),
    ("a red chair", "a red chair"), ("", ""), (None, None), (5, 5),
])
def test_safe_cell(value: object, expected: object) -> None:
    assert safe_cell(value) == expected


def test_image_file_name_never_uses_prompt_text() -> None:
    assert image_file_name(0, 0, TASK, f"job/{TASK}.png") == f"00001-01-{TASK}.png"
    assert image_file_name(41, 2, TASK, "job/x") == f"00042-03-{TASK}.png"


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (12.34, "12.3 s"), (185, "3 min 05 s"), (3725, "1 h 02 min")])
def test_duration(seconds: float | None, text: str) -> None:
    assert ui.duration(seconds) == text


def test_money_and_millis() -> None:
    assert ui.money(None) == "unknown" and ui.money(0) == "$0.00"
    assert ui.money(0.034) == "$0.034" and ui.money(1234.5) == "$1,234.50"
    assert ui.money(0.4) == "$0.40" and ui.money(0.005) == "$0.005"
    assert ui.millis(850) == "850 ms" and ui.millis(1500) == "1.50 s"
