""".env.example names every setting (deploy as a user would), and the defaults
it writes are the settings' own: the file loads as settings equal to the defaults."""

from __future__ import annotations

import re

from core.config import Settings
from tests.conftest import REPO_ROOT

EXAMPLE = (REPO_ROOT / ".env.example").read_text()


def test_every_setting_is_in_env_example() -> None:
    named = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", EXAMPLE, re.MULTILINE))
    missing = sorted(set(Settings.model_fields) - named)
    assert not missing, f".env.example lacks: {', '.join(missing)}"


def test_env_example_values_are_the_defaults() -> None:
    written = Settings(_env_file=REPO_ROOT / ".env.example")  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert written.model_dump() == defaults.model_dump()
