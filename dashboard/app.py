"""The operator dashboard: ``streamlit run dashboard/app.py``.

Sign-in first (dashboard.auth), then the pages: Submit, Jobs, Job detail, Queue. Every
read and action goes through dashboard.data into core.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the repository root;
# add it so `core` and `dashboard` import from a plain checkout too.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from core.errors import ConfigError, DatabaseUnavailable  # noqa: E402
from dashboard import auth, data  # noqa: E402

st.set_page_config(page_title="AIWebImageService", page_icon="🖼️", layout="wide")

try:
    settings = data.settings()
except ConfigError as exc:
    st.error(f"The dashboard cannot start: {exc.message}")
    st.stop()
except ValidationError as exc:
    # Name the variables, never their values (they may be secrets).
    names = ", ".join(str(e["loc"][0]) for e in exc.errors() if e.get("loc"))
    st.error(f"The dashboard cannot start: invalid settings: {names}")
    st.stop()

if not auth.require_sign_in(settings):
    st.stop()

page = st.navigation([
    # The default page lives at the app's root URL (a url_path would be ignored).
    st.Page("app_pages/jobs.py", title="Jobs", icon=":material/list_alt:", default=True),
    st.Page("app_pages/submit.py", title="Submit", icon=":material/add_photo_alternate:",
            url_path="submit"),
    st.Page("app_pages/job.py", title="Job detail", icon=":material/photo_library:",
            url_path="job"),
    st.Page("app_pages/queue.py", title="Queue", icon=":material/queue:", url_path="queue"),
])
st.sidebar.caption(
    f"{settings.ENVIRONMENT} · model {settings.provider_name} · "
    f"queue {'Cloud Tasks' if settings.USE_CLOUD_TASKS else 'local'} · "
    f"storage {settings.storage_name}")

try:
    page.run()
except DatabaseUnavailable:
    st.error("The database cannot be reached right now. This page retries when you "
             "reload it; work already queued is not lost.")
