"""Start-up checks shared by the worker, the dashboard and the CLI.

A configuration mistake is one line on stderr naming the variable and the accepted forms,
exit status 2, never a traceback (``exit_on_config_error``). What is checked before
anything listens: the settings themselves (core.config), that the database answers (host
and port named, never the password), that USE_CLOUD_TASKS has Google credentials, and,
when the provider is OpenAI, that the key is accepted (one cheap authenticated call).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from core.config import Settings, load_settings
from core.errors import ConfigError, InvalidInput

log = logging.getLogger(__name__)

DB_CONNECT_TIMEOUT_S = 5
OPENAI_CHECK_TIMEOUT_S = 10.0


@contextmanager
def exit_on_config_error(program: str) -> Iterator[None]:
    """Turn a ConfigError into one stderr line and exit status 2."""
    try:
        yield
    except ConfigError as exc:
        message = " ".join(exc.message.split())  # one line, whatever the message held
        print(f"{program}: configuration error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def settings_or_exit(program: str) -> Settings:
    with exit_on_config_error(program):
        return checked_settings()


def checked_settings() -> Settings:
    """load_settings() plus the cross-checks that need the domain (check_settings)."""
    settings = load_settings()
    check_settings(settings)
    return settings


def check_settings(settings: Settings) -> None:
    """The settings checks that need a domain package's rules, so that core.config stays a
    leaf everyone can import: the rates file, the image model, size and quality, the job
    webhook URL. ConfigError naming the variable and what it accepts."""
    from core.billing.prices import QUALITIES, SIZES, load_prices
    from core.jobs.meta import clean_webhook_url
    from core.providers.image_models import refusal_reason, selectable_models

    if settings.PRICES_FILE:
        load_prices(settings.PRICES_FILE)  # names the file and the line
    accepted_models = selectable_models()
    if settings.OPENAI_IMAGE_MODEL not in accepted_models:
        raise ConfigError(f"OPENAI_IMAGE_MODEL={settings.OPENAI_IMAGE_MODEL!r} "
                          f"{refusal_reason(settings.OPENAI_IMAGE_MODEL)}; "
                          f"accepted: {', '.join(accepted_models)}")
    for name, known in (("OPENAI_IMAGE_SIZE", SIZES), ("OPENAI_IMAGE_QUALITY", QUALITIES)):
        value = getattr(settings, name)
        if value not in (*known, "auto"):
            raise ConfigError(f"{name}={value!r} is not accepted; accepted: "
                              + ", ".join((*known, "auto")))
    if settings.JOB_WEBHOOK_URL is not None:
        try:
            clean_webhook_url(settings.JOB_WEBHOOK_URL.get_secret_value(),
                              require_https=settings.ENVIRONMENT == "production")
        except InvalidInput as exc:  # the message never repeats the URL
            raise ConfigError(f"JOB_WEBHOOK_URL {exc.message.split(': ', 1)[-1]}") from None


def describe_database(url: str) -> str:
    """host:port (or the socket directory) of a database URL, never user or password."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return "an unparsable DATABASE_URL"
    host = parsed.host or str(parsed.query.get("host") or "localhost")
    return f"{host}:{parsed.port or 5432}"


def _reason(exc: BaseException, password: str | None) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "failed: " in text:
        text = text.split("failed: ", 1)[1]
    if password:
        text = text.replace(password, "***")
    return text[:200]


def check_database(settings: Settings) -> str:
    """Connect once (short timeout) and run SELECT 1; the SQLAlchemy URL on success."""
    import psycopg
    from sqlalchemy.engine import make_url

    from core import db

    try:
        url = db.resolve_database_url(settings)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"DATABASE_URL: {type(exc).__name__}: {_reason(exc, None)}") from None
    parsed = make_url(url)
    libpq = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(libpq, connect_timeout=DB_CONNECT_TIMEOUT_S,
                             prepare_threshold=None) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise ConfigError(
            f"DATABASE_URL: cannot reach PostgreSQL at {describe_database(url)} "
            f"({_reason(exc, parsed.password)})") from None
    return url


def check_cloud_tasks(settings: Settings) -> None:
    """USE_CLOUD_TASKS needs Google credentials (not for the emulator): checked at start
    in every environment, or every submit would fail with a traceback."""
    if not settings.USE_CLOUD_TASKS or settings.CLOUD_TASKS_EMULATOR_HOST:
        return
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError:
        raise ConfigError(
            "USE_CLOUD_TASKS=true but no Google credentials were found: on Cloud Run give "
            "the service an account; elsewhere set GOOGLE_APPLICATION_CREDENTIALS or run "
            "`gcloud auth application-default login` (or CLOUD_TASKS_EMULATOR_HOST for "
            "the emulator)") from None


@dataclass(frozen=True)
class ProviderCheck:
    """What the start-up key check found. ``authenticated`` None = could not tell."""

    provider: str
    authenticated: bool | None
    reason: str = ""


def check_openai_key(settings: Settings) -> ProviderCheck:
    """One cheap authenticated call (models.retrieve of OPENAI_IMAGE_MODEL)."""
    if settings.provider_name != "openai":
        return ProviderCheck(settings.provider_name, True)
    if settings.OPENAI_API_KEY is None or not settings.OPENAI_API_KEY.get_secret_value():
        return ProviderCheck("openai", False, "OPENAI_API_KEY is not set")
    import openai

    client = openai.OpenAI(api_key=settings.OPENAI_API_KEY.get_secret_value(),
                           base_url=settings.OPENAI_BASE_URL, max_retries=0,
                           timeout=OPENAI_CHECK_TIMEOUT_S)
    try:
        client.models.retrieve(settings.OPENAI_IMAGE_MODEL)
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        return ProviderCheck("openai", False,
                             f"OPENAI_API_KEY was rejected by OpenAI (HTTP {exc.status_code})")
    except openai.NotFoundError:
        # A 404 comes after authentication: the key is good. The model may simply not be
        # listed under /v1/models, so this alone must not stop a production start.
        return ProviderCheck("openai", True, f"OPENAI_IMAGE_MODEL="
                             f"{settings.OPENAI_IMAGE_MODEL} is not listed for this key")
    except openai.APIError as exc:
        return ProviderCheck("openai", None,
                             f"could not check OPENAI_API_KEY: {type(exc).__name__}")
    finally:
        client.close()
    return ProviderCheck("openai", True)


def preflight(settings: Settings, *, database: bool = True,
              provider: bool = False) -> ProviderCheck | None:
    """Every start-up check; ConfigError for what must stop the start. Production refuses
    a rejected OpenAI key; elsewhere the result is shown by /healthz and the dashboard."""
    if database:
        check_database(settings)
    check_cloud_tasks(settings)
    for warning in settings.start_warnings():
        log.warning(warning, extra={"action": "start_warning"})
    if not provider:
        return None
    result = check_openai_key(settings)
    if result.authenticated is False:
        if settings.ENVIRONMENT == "production":
            raise ConfigError(f"ENVIRONMENT=production refuses to start: {result.reason}")
        log.error("image provider is not authenticated: %s", result.reason,
                  extra={"action": "provider_unauthenticated"})
    elif result.reason:  # could not tell, or a model the key does not list
        log.warning("%s", result.reason, extra={"action": "provider_check_failed"})
    return result
