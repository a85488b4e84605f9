"""Sign-in for the dashboard.

Order of preference: an OIDC provider configured under ``[auth]`` in Streamlit's
secrets (``st.login``; Google, Microsoft Entra, Okta, ...), else the password in
``DASHBOARD_PASSWORD``, else open, which only development and test allow:
``ENVIRONMENT=production`` with neither refuses to serve any page.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import streamlit as st

from core.config import Settings
from core.errors import ConfigError

SESSION_KEY = "_dashboard_signed_in"
OPERATOR_KEY = "_dashboard_operator"
# What jobs submitted from the dashboard record as submitted_by, per sign-in mode (OIDC
# records the account's email).
PASSWORD_OPERATOR = "password operator"
OPEN_OPERATOR = "dashboard (no sign-in)"
ANY_ACCOUNT = "*"
# A wrong password costs this long, so guessing through the form is slow.
WRONG_PASSWORD_DELAY_S = 1.0
_OIDC_KEYS = ("client_id", "client_secret", "server_metadata_url")


@dataclass(frozen=True)
class AuthPlan:
    mode: Literal["oidc", "password", "open"]
    # OIDC: None is the provider written directly under [auth]; names are [auth.<name>].
    providers: tuple[str | None, ...] = ()


def oidc_providers(auth_section: Mapping[str, Any]) -> tuple[str | None, ...]:
    """The usable providers of a secrets ``[auth]`` section (pure)."""
    if not auth_section.get("redirect_uri") or not auth_section.get("cookie_secret"):
        return ()
    found: list[str | None] = []
    if all(auth_section.get(k) for k in _OIDC_KEYS):
        found.append(None)
    for name, value in auth_section.items():
        if isinstance(value, Mapping) and all(value.get(k) for k in _OIDC_KEYS):
            found.append(str(name))
    return tuple(found)


def plan(settings: Settings, auth_section: Mapping[str, Any]) -> AuthPlan:
    """How this dashboard signs people in (pure). Raises ConfigError when production
    would be open."""
    providers = oidc_providers(auth_section)
    if providers:
        if settings.ENVIRONMENT == "production" and not (
                settings.DASHBOARD_ALLOWED_EMAILS or settings.DASHBOARD_ALLOWED_DOMAINS):
            raise ConfigError(
                "ENVIRONMENT=production with OIDC sign-in needs DASHBOARD_ALLOWED_EMAILS or "
                "DASHBOARD_ALLOWED_DOMAINS (DASHBOARD_ALLOWED_DOMAINS=* admits every account "
                "the provider signs in)")
        return AuthPlan("oidc", providers)
    password = settings.DASHBOARD_PASSWORD
    if password is not None and password.get_secret_value():
        return AuthPlan("password")
    if settings.ENVIRONMENT == "production":
        raise ConfigError(
            "ENVIRONMENT=production refuses to serve the dashboard without sign-in: "
            "configure an OIDC provider under [auth] in .streamlit/secrets.toml, or set "
            "DASHBOARD_PASSWORD")
    return AuthPlan("open")


def account_allowed(email: str | None, email_verified: object, *,
                    emails: Sequence[str], domains: Sequence[str]) -> bool:
    """Whether an OIDC account may use the dashboard (pure). No list at all admits
    everyone (development only: production refuses to start so). An email the provider
    says is unverified proves nothing and is refused."""
    if not emails and not domains:
        return True
    if ANY_ACCOUNT in domains:
        return True
    if not email or email_verified is False or "@" not in email:
        return False
    address = email.strip().lower()
    return address in emails or address.rsplit("@", 1)[1] in domains


def operator() -> str:
    """Who is using this session, for submitted_by and the audit log."""
    return str(st.session_state.get(OPERATOR_KEY) or OPEN_OPERATOR)


def password_matches(given: str, settings: Settings) -> bool:
    expected = settings.DASHBOARD_PASSWORD
    if expected is None or not expected.get_secret_value():
        return False
    # Constant time: the comparison must not tell how much of a guess was right.
    return hmac.compare_digest(given.encode("utf-8"), expected.get_secret_value().encode("utf-8"))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def secrets_auth_section() -> dict[str, Any]:
    """The ``[auth]`` section of Streamlit's secrets, or {} when there is none."""
    try:
        if "auth" not in st.secrets:
            return {}
        section = _plain(st.secrets["auth"])
    except FileNotFoundError:  # no secrets.toml at all
        return {}
    return section if isinstance(section, dict) else {}


def require_sign_in(settings: Settings) -> bool:
    """Render sign-in when needed; True when the visitor may see the dashboard."""
    try:
        how = plan(settings, secrets_auth_section())
    except ConfigError as exc:
        st.error(exc.message)
        return False
    if how.mode == "open":
        st.session_state[OPERATOR_KEY] = OPEN_OPERATOR
        st.sidebar.caption("Sign-in is off (development). Production requires it.")
        return True
    if how.mode == "oidc":
        return _oidc(how.providers, settings)
    return _password(settings)


def _oidc(providers: tuple[str | None, ...], settings: Settings) -> bool:
    if st.user.is_logged_in:
        email = st.user.get("email")
        who = str(email or st.user.get("name") or "signed in")
        if not account_allowed(str(email) if email else None, st.user.get("email_verified"),
                               emails=settings.DASHBOARD_ALLOWED_EMAILS,
                               domains=settings.DASHBOARD_ALLOWED_DOMAINS):
            st.session_state.pop(OPERATOR_KEY, None)
            st.title("Not allowed")
            st.error("This account is not allowed to use this dashboard. Ask an "
                     "administrator to add it to DASHBOARD_ALLOWED_EMAILS (or its domain to "
                     "DASHBOARD_ALLOWED_DOMAINS), or sign in with another account.")
            st.text(f"Signed in as: {who}")  # verbatim: no Markdown from the provider
            if st.button("Sign out", key="sign_out_refused"):
                st.logout()
            return False
        st.session_state[OPERATOR_KEY] = who.lower()
        st.sidebar.caption(f"Signed in as {who}")
        if st.sidebar.button("Sign out", key="sign_out"):
            st.logout()
        return True
    st.title("AIWebImageService")
    st.write("Sign in to use the operator dashboard.")
    for provider in providers:
        label = f"Sign in with {provider.title()}" if provider else "Sign in"
        if st.button(label, key=f"sign_in_{provider or 'default'}", type="primary"):
            st.login(provider)
    return False


def _password(settings: Settings) -> bool:
    if st.session_state.get(SESSION_KEY):
        st.session_state[OPERATOR_KEY] = PASSWORD_OPERATOR
        if st.sidebar.button("Sign out", key="sign_out"):
            st.session_state.pop(SESSION_KEY, None)
            st.rerun()
        return True
    st.title("AIWebImageService")
    with st.form("sign_in"):
        given = st.text_input("Dashboard password", type="password", key="password_input")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        if password_matches(given, settings):
            st.session_state[SESSION_KEY] = True
            st.rerun()
        time.sleep(WRONG_PASSWORD_DELAY_S)
        st.error("Wrong password.")
    return False
