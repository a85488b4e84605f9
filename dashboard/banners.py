"""Banners for what the operator must fix: deliveries that do not reach the
task handler (core.dispatch.undeliverable, read from delivery_problems, so causes any
process recorded show here), and an image provider whose key is not accepted. A page
calls ``show_problems()`` once, near its top."""

from __future__ import annotations

import hashlib

import streamlit as st

from core import startup
from core.dispatch import undeliverable
from dashboard import data

PROVIDER_CHECK_TTL_S = 300


@st.cache_data(ttl=PROVIDER_CHECK_TTL_S, show_spinner=False)
def _provider_problem(cache_key: str) -> str | None:
    """One cheap authenticated call per TTL for the whole server (not per rerun), per
    ``cache_key`` (endpoint, model, key fingerprint). The parameter's name must not start
    with "_": Streamlit leaves such arguments out of the cache key, and then the first
    answer in the process would stand for every configuration."""
    check = startup.check_openai_key(data.settings())
    if check.authenticated is False:
        return f"Image provider {check.provider} is not authenticated: {check.reason}."
    return None


def problems() -> list[str]:
    try:
        found = [undeliverable.reason(p)
                 for p in undeliverable.recent_problems_sync(data.engine())]
    except Exception:  # the pages say the database is down on their own
        found = []
    settings = data.settings()
    if settings.provider_name == "openai":
        # The key's fingerprint is part of the cache key: a changed key is checked anew.
        key = settings.OPENAI_API_KEY.get_secret_value() if settings.OPENAI_API_KEY else ""
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
        problem = _provider_problem(
            f"{settings.OPENAI_BASE_URL}|{settings.OPENAI_IMAGE_MODEL}|{fingerprint}")
        if problem:
            found.append(problem)
    return found


def show_problems() -> None:
    for message in problems():
        st.error(message, icon=":material/report:")
