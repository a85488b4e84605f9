"""What the docs and the code's comments cite must be there for a reader of the repository:
no tracker numbers and no design file outside the repository (name the behaviour or a file
instead), every repository path a page mentions exists, and the configuration page names
every setting `core/config.py` reads (that file is the truth)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from core.config import Settings
from tests.conftest import REPO_ROOT

DOCS = REPO_ROOT / "docs"
PAGES = [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

# Where code, SQL and their comments live, and the files beside them that carry comments.
SOURCE_DIRS = ("core", "worker", "dashboard", "cli", "bench", "tests", "testing", "sql",
               "scripts")
SOURCE_SUFFIXES = {".py", ".sql", ".sh", ".md", ".toml", ".yaml", ".csv"}
ROOT_FILES = ("pyproject.toml", "Makefile", "Dockerfile.worker", "Dockerfile.dashboard",
              "cloudbuild.yaml", ".env.example")

# "issue 13", "Issue 14:", "issues 13 and 14": a tracker number a reader cannot open. The
# design file's name is assembled so this file does not cite it.
TRACKER = re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE)
DESIGN_FILE = re.compile(r"\bDESIGN" + r"\.md\b")

# The repository's own top-level folders: a mention of one of them is a repository path.
TOP_DIRS = ("core", "worker", "dashboard", "cli", "sql", "tests", "testing", "bench", "docs",
            "scripts", ".ci")
REPO_PATH = re.compile(r"(?<![\w./$-])((?:" + "|".join(re.escape(d) for d in TOP_DIRS)
                       + r")/[\w./*-]*)")
# A file named without its folder, in backticks: `test_deliveries.py`.
BARE_FILE = re.compile(r"`([\w.-]+\.(?:py|sql|sh))`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
SKIP_PARTS = {"__pycache__", ".venv", ".venv-emulator", ".pgdata", ".data", ".git"}


def _sources() -> Iterator[Path]:
    for folder in SOURCE_DIRS:
        for path in sorted((REPO_ROOT / folder).rglob("*")):
            if (path.is_file() and path.suffix in SOURCE_SUFFIXES
                    and not SKIP_PARTS.intersection(path.parts)):
                yield path
    for name in ROOT_FILES:
        if (REPO_ROOT / name).exists():
            yield REPO_ROOT / name
    yield from PAGES


def _citations(pattern: re.Pattern[str]) -> list[str]:
    this_file = Path(__file__).resolve()
    found = []
    for path in _sources():
        if path.resolve() == this_file:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()[:100]}")
    return found


def test_no_tracker_numbers_in_docs_or_comments() -> None:
    found = _citations(TRACKER)
    assert not found, ("name the behaviour (or a file), not a tracker number:\n"
                       + "\n".join(found))


def test_no_design_file_outside_the_repository_is_cited() -> None:
    found = _citations(DESIGN_FILE)
    assert not found, ("the design a reader needs is in docs/ (docs/architecture.md); "
                       "cite that:\n" + "\n".join(found))


def _exists(path: str) -> bool:
    path = path.split("::", 1)[0].rstrip(".,;:)")
    path = re.sub(r":\d+(-\d+)?$", "", path)  # file.py:73-98
    if any(c in path for c in "*?["):
        return any(REPO_ROOT.glob(path))
    return (REPO_ROOT / path).exists()


def _named_files() -> set[str]:
    """Every file name in the repository (virtualenvs, data and caches left out)."""
    names: set[str] = set()
    for _folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [d for d in subfolders if d not in SKIP_PARTS]
        names.update(files)
    return names


def test_docs_cite_only_files_that_exist() -> None:
    missing = []
    names = _named_files()
    for page in PAGES:
        text = page.read_text()
        where = page.relative_to(REPO_ROOT)
        for path in REPO_PATH.findall(text):
            if not _exists(path):
                missing.append(f"{where}: {path}")
        for name in BARE_FILE.findall(text):
            if "/" not in name and name not in names and not _exists(name):
                missing.append(f"{where}: {name}")
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor on the same page
            if not (page.parent / target.split("#", 1)[0]).exists():
                missing.append(f"{where}: link {target}")
    assert not missing, "pages cite files that do not exist:\n" + "\n".join(missing)


def test_the_checks_above_can_fail() -> None:
    """The patterns find what they are meant to (a scan that matched nothing would pass)."""
    assert TRACKER.search("the window (Issue 13: fair share)")
    assert TRACKER.search("every goal of issues 13 and 14")
    assert not TRACKER.search("an issue with the queue")
    assert DESIGN_FILE.search("see the contract in DESIGN" + ".md")
    assert REPO_PATH.findall("`core/delivery/processing.py` and sql/init_db.sql") == [
        "core/delivery/processing.py", "sql/init_db.sql"]
    assert REPO_PATH.findall("https://x.run.app/api/admin/worker/process-task") == []
    assert not _exists("core/no_such_module.py") and _exists("core/**/*.sql")
    assert _exists("worker/routes/tasks.py::process_task")


def _table_variables(page: Path) -> set[str]:
    """The names in the first column of the page's `| Variable |` tables."""
    names: set[str] = set()
    in_table = False
    for line in page.read_text().splitlines():
        if line.startswith("| Variable |"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table:
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_configuration_page_names_every_setting() -> None:
    page = DOCS / "configuration.md"
    named = _table_variables(page)
    settings = set(Settings.model_fields)
    assert not settings - named, f"docs/configuration.md lacks {sorted(settings - named)}"
    for doc in PAGES:
        unknown = _table_variables(doc) - settings
        assert not unknown, f"{doc.name} documents {sorted(unknown)}, which core/config.py " \
            "does not read"


def test_readme_is_read_in_five_minutes() -> None:
    """The README stays an entry page: what it is, the two commands, the layout, links.
    Everything else has its page under docs/."""
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move sections to docs/"
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", "\n".join(lines)))
    pages = {page.name for page in DOCS.glob("*.md")}
    assert pages <= linked, f"README.md links no page {sorted(pages - linked)}"
