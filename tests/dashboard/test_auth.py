"""Sign-in: production refuses to serve an open dashboard; a password or an OIDC provider
(st.login, configured in secrets) guards every page."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from core.config import Settings, get_settings
from core.errors import ConfigError
from dashboard import auth
from tests.conftest import REPO_ROOT
from tests.dashboard.conftest import app

OIDC = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "a-long-random-cookie-secret-for-tests",
    "client_id": "dashboard-client",
    "client_secret": "client-secret-value",
    "server_metadata_url": "https://idp.invalid/.well-known/openid-configuration",
}
# Production never falls back to the demo model or local storage unless named.
PRODUCTION = {"ENVIRONMENT": "production", "API_KEY": "k" * 32, "TASK_SECRET": "t" * 32,
              "IMAGE_PROVIDER": "demo", "STORAGE_BACKEND": "local",
              "DASHBOARD_ALLOWED_DOMAINS": "example.com"}


def _shows_dashboard(at: Any) -> bool:
    return any(t.value == "Jobs" for t in at.title)


@pytest.fixture
def production(env: dict[str, str]) -> dict[str, str]:
    env.update(PRODUCTION)
    return env


@pytest.fixture
def with_password(production: dict[str, str]) -> dict[str, str]:
    production["DASHBOARD_PASSWORD"] = "correct horse battery staple"
    return production


def test_production_with_nothing_configured_serves_nothing(production: dict[str, str],
                                                            settings: Settings) -> None:
    at = app().run()
    assert not at.exception
    assert any("refuses to serve the dashboard without sign-in" in e.value for e in at.error)
    assert not _shows_dashboard(at)
    assert not at.button and not at.text_input


def test_production_missing_settings_are_named(env: dict[str, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    env["ENVIRONMENT"] = "production"  # no API_KEY, no TASK_SECRET: Settings refuses
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        at = app().run()
    finally:
        get_settings.cache_clear()
    message = " ".join(e.value for e in at.error)
    assert "API_KEY" in message and "TASK_SECRET" in message
    assert not _shows_dashboard(at)


def test_password_sign_in(with_password: dict[str, str], settings: Settings) -> None:
    at = app().run()
    assert not _shows_dashboard(at)
    at.text_input(key="password_input").set_value("wrong guess")
    at.button[0].click().run()
    assert any(e.value == "Wrong password." for e in at.error)
    assert not _shows_dashboard(at)

    at.text_input(key="password_input").set_value("correct horse battery staple")
    at.button[0].click().run()
    assert _shows_dashboard(at)


def test_oidc_requires_login_and_lets_a_signed_in_user_through(
    production: dict[str, str], settings: Settings
) -> None:
    at = app()
    at.secrets["auth"] = dict(OIDC)
    at.user = {"is_logged_in": False}
    at.run()
    assert not _shows_dashboard(at)
    assert [b.label for b in at.button] == ["Sign in"]

    at.user = {"is_logged_in": True, "email": "operator@example.com"}
    at.run()
    assert _shows_dashboard(at)
    assert any("operator@example.com" in c.value for c in at.sidebar.caption)


def test_oidc_account_not_on_the_allowlist_sees_only_a_refusal(
    production: dict[str, str], settings: Settings
) -> None:
    at = app()
    at.secrets["auth"] = dict(OIDC)
    at.user = {"is_logged_in": True, "email": "visitor@elsewhere.org"}
    at.run()
    assert not at.exception
    assert not _shows_dashboard(at)
    assert [t.value for t in at.title] == ["Not allowed"]
    assert "not allowed to use this dashboard" in at.error[0].value
    assert [b.label for b in at.button] == ["Sign out"]
    assert not at.dataframe and not at.sidebar.caption
    at.user = {"is_logged_in": True, "email": "Ops@Example.com"}  # the domain, any case
    at.run()
    assert _shows_dashboard(at)


def test_production_oidc_without_an_allowlist_refuses_to_serve() -> None:
    with pytest.raises(ConfigError, match="DASHBOARD_ALLOWED_EMAILS or DASHBOARD_ALLOWED"):
        auth.plan(_settings(ENVIRONMENT="production", DASHBOARD_ALLOWED_DOMAINS=[]), OIDC)
    assert auth.plan(_settings(ENVIRONMENT="production", DASHBOARD_ALLOWED_DOMAINS=["*"]),
                     OIDC).mode == "oidc"


@pytest.mark.parametrize(("email", "verified", "emails", "domains", "allowed"), [
    ("a@example.com", None, [], ["example.com"], True),          # the domain
    ("a@sub.example.com", None, [], ["example.com"], False),     # not a subdomain
    ("a@evilexample.com", None, [], ["example.com"], False),     # not a suffix match
    ("boss@partner.org", True, ["boss@partner.org"], [], True),  # an exact email
    ("other@partner.org", True, ["boss@partner.org"], [], False),
    ("a@example.com", False, [], ["example.com"], False),        # unverified proves nothing
    (None, None, [], ["example.com"], False),                    # no email claim
    (None, None, [], ["*"], True),                               # deliberately anyone
    ("x@y.z", None, [], [], True),                               # no list (development)
])
def test_account_allowed(email: str | None, verified: object, emails: list[str],
                         domains: list[str], allowed: bool) -> None:
    assert auth.account_allowed(email, verified, emails=emails, domains=domains) is allowed


# ---- the pure decision -----------------------------------------------------------------

def _settings(**values: Any) -> Settings:
    return Settings.model_construct(**{"ENVIRONMENT": "development",
                                       "DASHBOARD_PASSWORD": None,
                                       "DASHBOARD_ALLOWED_EMAILS": [],
                                       "DASHBOARD_ALLOWED_DOMAINS": ["example.com"], **values})


@pytest.mark.parametrize(("environment", "password", "section", "expected"), [
    ("development", None, {}, auth.AuthPlan("open")),            # local demo stays open
    ("production", "pw", {}, auth.AuthPlan("password")),         # password from the env
    ("production", "pw", OIDC, auth.AuthPlan("oidc", (None,))),  # OIDC wins over password
    ("production", None, {**{k: OIDC[k] for k in ("redirect_uri", "cookie_secret")},
                          "google": {k: OIDC[k] for k in ("client_id", "client_secret",
                                                           "server_metadata_url")}},
     auth.AuthPlan("oidc", ("google",))),                        # a named provider
    ("development", "", {}, auth.AuthPlan("open")),               # empty password = none
])
def test_plan(environment: str, password: str | None, section: dict[str, Any],
              expected: auth.AuthPlan) -> None:
    settings = _settings(ENVIRONMENT=environment,
                         DASHBOARD_PASSWORD=SecretStr(password) if password is not None
                         else None)
    assert auth.plan(settings, section) == expected


@pytest.mark.parametrize("section", [
    {},                                                          # nothing
    {"client_id": "x"},                                          # incomplete provider
    {k: v for k, v in OIDC.items() if k != "cookie_secret"},     # no cookie secret
])
def test_plan_refuses_open_production(section: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="DASHBOARD_PASSWORD"):
        auth.plan(_settings(ENVIRONMENT="production"), section)


def test_password_comparison() -> None:
    settings = _settings(DASHBOARD_PASSWORD=SecretStr("s3cret"))
    assert auth.password_matches("s3cret", settings)
    assert not auth.password_matches("s3cre", settings)
    assert not auth.password_matches("", _settings())


# ---- before the server starts: python -m dashboard -------------------------------------

def _preflight(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dashboard", "--check"], cwd=cwd, capture_output=True,
        text=True, timeout=60,
        env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}, check=False)


def test_preflight_refuses_an_open_production_dashboard(production: dict[str, str],
                                                        tmp_path: Path) -> None:
    result = _preflight(production, tmp_path)
    assert result.returncode == 2
    assert "refuses to serve the dashboard without sign-in" in result.stderr


def test_preflight_names_missing_settings_without_values(env: dict[str, str],
                                                         tmp_path: Path) -> None:
    result = _preflight({**env, "ENVIRONMENT": "production",
                         "OPENAI_API_KEY": "secret-key-value"}, tmp_path)
    assert result.returncode == 2
    assert "SUPABASE_KEY" in result.stderr and "secret-key-value" not in result.stderr
    # The dashboard serves neither the admin API nor the task endpoint.
    assert "TASK_SECRET" not in result.stderr and "API_KEY," not in result.stderr


def test_preflight_accepts_password_or_oidc_secrets(with_password: dict[str, str],
                                                    production: dict[str, str],
                                                    tmp_path: Path) -> None:
    assert "sign-in: password" in _preflight(with_password, tmp_path).stderr
    secrets = tmp_path / ".streamlit" / "secrets.toml"
    secrets.parent.mkdir()
    secrets.write_text("[auth]\n" + "".join(f'{k} = "{v}"\n' for k, v in OIDC.items()))
    without_password = {k: v for k, v in production.items() if k != "DASHBOARD_PASSWORD"}
    result = _preflight(without_password, tmp_path)
    assert result.returncode == 0 and "sign-in: oidc" in result.stderr
