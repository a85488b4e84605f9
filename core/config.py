"""Settings: the one place the environment is read.

Names follow the deployment guide (ENVIRONMENT, USE_CLOUD_TASKS, GCP_PROJECT, ...), so a
deployment configured for the guide keeps working.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.errors import ConfigError

DEFAULT_OPENAI_IMAGE_MODEL = "gpt-image-2"


def key_budgets(raw: str | None) -> dict[str, float]:
    """BUDGET_DAILY_USD_BY_KEY as {key name: USD}; a bad entry is one line naming it."""
    budgets: dict[str, float] = {}
    for n, entry in enumerate(e.strip() for e in (raw or "").split(",")):
        if not entry:
            continue
        name, sep, usd = entry.partition("=")
        try:
            value = float(usd)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or value < 0:
            raise ConfigError(f"BUDGET_DAILY_USD_BY_KEY: entry {n + 1} must be name=usd "
                              "(usd a number >= 0)")
        budgets[name.strip()] = value
    return budgets


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    ENVIRONMENT: Literal["development", "test", "production"] = "development"

    # queue
    USE_CLOUD_TASKS: bool = False
    GCP_PROJECT: str | None = None
    GCP_LOCATION: str = "us-central1"
    QUEUE_NAME: str = "image-generation"
    CLOUD_TASKS_SERVICE_ACCOUNT: str | None = None
    # Points the google-cloud-tasks client at an emulator (host:port, insecure channel).
    CLOUD_TASKS_EMULATOR_HOST: str | None = None
    WORKER_URL: str | None = None
    # Where the OIDC verifier fetches Google's token signing certificates; tests point it
    # at certificates of their own key. None = Google's.
    OIDC_CERTS_URL: str | None = None

    # database
    DATABASE_URL: SecretStr | None = None
    DB_POOL_SIZE: int = Field(default=10, ge=1, le=200)
    # What sits between us and PostgreSQL (core.db.pooler_mode). auto = port
    # 6543 (Supabase's transaction pooler) means transaction mode, where server-side
    # prepared statements break, so psycopg's are turned off; session and direct keep them.
    DB_POOLER: Literal["auto", "transaction", "session", "direct"] = "auto"

    # storage
    STORAGE_BACKEND: Literal["supabase", "local"] | None = None
    LOCAL_STORAGE_DIR: str = ".data/images"
    SUPABASE_URL: str | None = None
    SUPABASE_KEY: SecretStr | None = None
    SUPABASE_BUCKET: str = "generated-images"
    SUPABASE_SIGNED_URLS: bool = False
    SIGNED_URL_TTL_S: int = Field(default=3600, ge=60, le=604800)

    # image model
    IMAGE_PROVIDER: Literal["openai", "demo"] | None = None
    OPENAI_API_KEY: SecretStr | None = None
    OPENAI_BASE_URL: str | None = None
    OPENAI_IMAGE_MODEL: str = DEFAULT_OPENAI_IMAGE_MODEL
    OPENAI_IMAGE_SIZE: str = "1024x1024"
    OPENAI_IMAGE_QUALITY: str = "medium"
    OPENAI_TIMEOUT_S: float = Field(default=180.0, gt=0)
    DEMO_LATENCY_MS: int = Field(default=300, ge=0)
    DEMO_TRANSIENT_FAILURE_RATE: float = Field(default=0.0, ge=0.0, le=1.0)
    DEMO_PERMANENT_FAILURE_RATE: float = Field(default=0.0, ge=0.0, le=1.0)
    # A provider storm for fault tests: per attempt, drawn from (task id, attempt) so a
    # run is reproducible. 429s carry DEMO_RETRY_AFTER_S as Retry-After.
    DEMO_RATE_LIMIT_RATE: float = Field(default=0.0, ge=0.0, le=1.0)
    DEMO_SERVER_ERROR_RATE: float = Field(default=0.0, ge=0.0, le=1.0)
    DEMO_TIMEOUT_RATE: float = Field(default=0.0, ge=0.0, le=1.0)
    DEMO_RETRY_AFTER_S: float = Field(default=1.0, ge=0.0)
    DEMO_IMAGE_PX: int = Field(default=512, ge=16, le=2048)
    # Tests: a file the demo model appends "task_id attempt" to on every call.
    DEMO_CALL_LOG: str | None = None
    # Rates and per-image estimates (core/billing/prices.csv's format); None = the shipped file.
    PRICES_FILE: str | None = None
    # The dashboard asks for a confirmation above this estimate (and for `auto` options).
    COST_CONFIRM_USD: float = Field(default=50.0, ge=0.0)
    # Batch mode (core/batch): requests per OpenAI batch. 500 keeps an output file near
    # 2 GB of base64 images (a re-download after a crash costs minutes, not hours); the
    # Batch API's own limits are 50,000 requests and 200 MB of input. See docs/batch-mode.md.
    BATCH_CHUNK_SIZE: int = Field(default=500, ge=1, le=50_000)
    # How often open batches are checked (local poller loop; Cloud Tasks poll delay).
    BATCH_POLL_S: float = Field(default=60.0, gt=0)

    # delivery and retries
    MAX_ATTEMPTS: int = Field(default=5, ge=1, le=100)
    RETRY_MIN_BACKOFF_S: float = Field(default=1.0, ge=0.0)
    RETRY_MAX_BACKOFF_S: float = Field(default=300.0, ge=0.0)
    RETRY_MAX_DOUBLINGS: int = Field(default=5, ge=0, le=30)
    # How long Cloud Tasks (or the local dispatcher) waits for one delivery.
    DISPATCH_DEADLINE_S: float = Field(default=300.0, ge=1.0, le=1800.0)
    # A claim's lease, renewed every LEASE_RENEW_S while the handler works (core.delivery.leases):
    # a holder that dies frees its task within one lease, however long the dispatch
    # deadline; a live one keeps it while the model runs. 30 s / 10 s: a lease survives two
    # missed renewals, and a dead worker's tasks are free again within half a minute.
    # A renewal interval above a third of the lease is lowered to that third.
    TASK_LEASE_S: float = Field(default=30.0, ge=1.0)
    LEASE_RENEW_S: float = Field(default=10.0, gt=0.0)
    LOCAL_MAX_CONCURRENCY: int = Field(default=5, ge=1, le=1000)
    # AIMD on the local dispatcher's in-flight limit (core.dispatch.local.limits): up to
    # LOCAL_MAX_CONCURRENCY, halved on 429/503 at most once per cooldown, and the queue held
    # for a 429's Retry-After. Off = a fixed LOCAL_MAX_CONCURRENCY with per-task backoff.
    ADAPTIVE_CONCURRENCY: bool = True
    ADAPTIVE_MIN_CONCURRENCY: int = Field(default=1, ge=1, le=1000)
    ADAPTIVE_COOLDOWN_S: float = Field(default=1.0, ge=0.0)
    # The worker's provider client waits (at most this long) when the provider's
    # Retry-After / x-ratelimit-* headers say the next call would be refused
    # (core.providers.ratelimit); 0 = call anyway and let the queue retry.
    PROVIDER_RATE_WAIT_S: float = Field(default=30.0, ge=0.0)
    RUN_DISPATCHER: bool = True
    DISPATCH_POLL_S: float = Field(default=0.5, gt=0)
    SWEEP_INTERVAL_S: float = Field(default=60.0, gt=0)
    # Cloud Tasks mode: a queued row untouched this long (or a running one whose lease ran
    # out this long ago) is checked against the queue; if the queue no longer holds its task
    # it is handed over again (core.dispatch.cloudtasks.sweeper.sweep_stranded). Above the
    # queue's max backoff.
    STRANDED_AFTER_S: float = Field(default=1800.0, ge=0.0)
    # Cloud Tasks mode: the queue holds at most this many tasks over all jobs
    # (core.dispatch.cloudtasks.window); the rest wait pending in the table, which decides
    # what runs next (fair share, priority, spend limits). At least the queue's
    # max_concurrent_dispatches (the guide's: 100) keeps the queue and the provider busy;
    # much more lets a late job's tasks queue behind the window of earlier ones.
    CLOUD_TASKS_WINDOW: int = Field(default=100, ge=1, le=100_000)
    # Priority is strict (a high job takes every slot that frees) except that a
    # job with nothing in flight and no delivery finished for this long gets its next
    # delivery first, whatever its priority: lower priority is slowed, never starved
    # (core.dispatch.fair).
    PRIORITY_STARVATION_S: float = Field(default=30.0, ge=0.0, le=86_400.0)
    # Spend limits (core.billing.spend). A day's spend (UTC) over all jobs, and per named
    # API key ("name=usd,name2=usd"; the key's name is the job's submitted_by). At the limit
    # dispatch of the affected tasks stops (they wait, never fail); raising it resumes them.
    BUDGET_DAILY_USD: float | None = Field(default=None, ge=0.0)
    BUDGET_DAILY_USD_BY_KEY: str | None = None
    # How often spend is recomputed from what was billed (the claim projects in between).
    SPEND_CHECK_S: float = Field(default=2.0, gt=0)
    # Who holds a lease: stable across restarts of one process, different for two processes
    # (default hostname:PORT), so a restarted worker frees its previous boot's tasks at
    # once. Cloud Run (K_SERVICE set) shares hostname and port between instances, so there
    # the default is per boot and the 30 s lease is the bound.
    WORKER_ID: str | None = None
    K_SERVICE: str | None = None  # set by Cloud Run; only read to choose WORKER_ID's default
    # On SIGTERM: stop taking deliveries, let in-flight ones finish this long, then release
    # the rest (due at once). Under Cloud Run's 10 s between SIGTERM and SIGKILL.
    SHUTDOWN_GRACE_S: float = Field(default=8.0, ge=0.0, le=3600.0)
    # A 429 does not use up MAX_ATTEMPTS while the task's rate-limit streak is younger than
    # this (core.delivery.retry): a provider outage of minutes fails nothing; one of hours
    # still ends.
    RATE_LIMIT_BUDGET_S: float = Field(default=3600.0, ge=0.0)
    # Model answers whose storing failed wait here for the next attempt, so an image is
    # paid for once (core.delivery.staging).
    STAGING_DIR: str = ".data/staging"
    # Cloud Tasks mode: how often the worker takes over running rows whose lease expired
    # (a dead instance) and finishes interrupted hand-overs (core.dispatch.cloudtasks.checks).
    LEASE_CHECK_INTERVAL_S: float = Field(default=10.0, gt=0)
    # A task whose deliveries never reach the handler (404, refused connection,
    # TLS error, 401/403) this many times fails as `undeliverable` instead of looping
    # (core.dispatch.undeliverable); tries are spread by the retry backoff.
    UNDELIVERABLE_MAX_TRIES: int = Field(default=5, ge=1, le=100)

    # security and limits
    API_KEY: SecretStr | None = None
    TASK_SECRET: SecretStr | None = None
    CORS_ORIGINS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    MAX_PROMPTS_PER_BATCH: int = Field(default=10_000, ge=1)
    MAX_TASKS_PER_BATCH: int = Field(default=50_000, ge=1)
    MAX_PROMPT_CHARS: int = Field(default=4_000, ge=1)
    MAX_COUNT_PER_PROMPT: int = Field(default=10, ge=1)
    MAX_BODY_BYTES: int = Field(default=8 * 1024 * 1024, ge=1024)
    DASHBOARD_PASSWORD: SecretStr | None = None
    # The dashboard shows times in this IANA zone (e.g. Europe/Paris); unset: the
    # browser's zone, else UTC. Checked here so a typo is one clear line at start.
    DASHBOARD_TIMEZONE: str | None = None
    # Named admin keys, "name1:key1,name2:key2", beside API_KEY (which is named "default");
    # the name a request's key resolves to is recorded as its jobs' submitted_by.
    API_KEYS: SecretStr | None = None
    # Who may sign in to the dashboard through OIDC: exact emails and email domains
    # (comma-separated, case-insensitive). Production with OIDC needs one of them;
    # DASHBOARD_ALLOWED_DOMAINS=* lets any account in deliberately.
    DASHBOARD_ALLOWED_EMAILS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    DASHBOARD_ALLOWED_DOMAINS: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # notifications and retention (core.jobs.notify, core.jobs.retention)
    # Default webhook for jobs submitted without one; may hold a secret (Slack's do).
    JOB_WEBHOOK_URL: SecretStr | None = None
    # The dashboard's public address, for "open the job" links in notifications.
    DASHBOARD_URL: str | None = None
    WEBHOOK_POLL_S: float = Field(default=5.0, gt=0)
    WEBHOOK_TIMEOUT_S: float = Field(default=10.0, gt=0)
    WEBHOOK_RETRY_BASE_S: float = Field(default=5.0, ge=0.0)
    WEBHOOK_RETRY_MAX_S: float = Field(default=900.0, ge=0.0)
    WEBHOOK_MAX_ATTEMPTS: int = Field(default=8, ge=1, le=100)
    # Finished jobs older than this many days are deleted with their images; None = off.
    JOB_RETENTION_DAYS: int | None = Field(default=None, ge=1)
    RETENTION_SWEEP_INTERVAL_S: float = Field(default=3600.0, gt=0)

    # service
    HOST: str = "127.0.0.1"
    PORT: int = Field(default=8080, ge=1, le=65535)
    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: Literal["json", "text"] = "json"
    # Which service this process is. The dashboard (python -m dashboard sets it;
    # so does Dockerfile.dashboard) never serves the admin API or the task endpoint, so
    # production does not ask it for API_KEY or TASK_SECRET.
    SERVICE_ROLE: Literal["worker", "dashboard"] = "worker"

    @field_validator("BUDGET_DAILY_USD_BY_KEY")
    @classmethod
    def _budgets_by_key(cls, value: str | None) -> str | None:
        if value:
            key_budgets(value)
        return value

    @field_validator("DASHBOARD_TIMEZONE")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError("not an IANA time zone such as Europe/Paris") from None
        return value or None

    @field_validator("CORS_ORIGINS", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return parse_origins(value)

    @field_validator("WORKER_URL")
    @classmethod
    def _worker_url_form(cls, value: str | None) -> str | None:
        if value:
            from core.worker_url import base_url

            base_url(value)  # ConfigError naming WORKER_URL and both accepted forms
        return value

    @field_validator("DASHBOARD_ALLOWED_EMAILS", "DASHBOARD_ALLOWED_DOMAINS", mode="before")
    @classmethod
    def _split_lower(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip().lower() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _defaults_and_production_checks(self) -> Settings:
        production = self.ENVIRONMENT == "production"
        # Production never falls back silently: the demo model and local storage only
        # when asked for by name; otherwise the missing key refuses the start below.
        if self.IMAGE_PROVIDER is None:
            self.IMAGE_PROVIDER = "openai" if self.OPENAI_API_KEY or production else "demo"
        if self.STORAGE_BACKEND is None:
            self.STORAGE_BACKEND = (
                "supabase" if (self.SUPABASE_URL and self.SUPABASE_KEY) or production
                else "local"
            )
        if self.USE_CLOUD_TASKS:
            # Checked in every environment: without these every submit would fail.
            missing = [n for n in ("GCP_PROJECT", "WORKER_URL") if not getattr(self, n)]
            if missing:
                raise ConfigError(
                    "USE_CLOUD_TASKS=true needs " + " and ".join(missing)
                    + " (or set USE_CLOUD_TASKS=false for the local queue)")
        self.api_keys()  # a malformed API_KEYS stops the start, naming the entry
        if self.RETRY_MAX_BACKOFF_S < self.RETRY_MIN_BACKOFF_S:
            raise ConfigError("RETRY_MAX_BACKOFF_S must be >= RETRY_MIN_BACKOFF_S")
        if self.ENVIRONMENT == "production":
            missing = self.missing_for_production()
            if missing:
                raise ConfigError(
                    "ENVIRONMENT=production refuses to start; missing: " + ", ".join(missing)
                )
        return self

    def missing_for_production(self) -> list[str]:
        """Names of the variables production needs but does not have (never values)."""
        worker = self.SERVICE_ROLE == "worker"
        need: list[str] = ["API_KEY", "DATABASE_URL"] if worker else ["DATABASE_URL"]
        if self.USE_CLOUD_TASKS:
            need += ["GCP_PROJECT", "WORKER_URL", "CLOUD_TASKS_SERVICE_ACCOUNT"]
        elif worker:
            need += ["TASK_SECRET"]
        if self.IMAGE_PROVIDER == "openai":
            need.append("OPENAI_API_KEY")
        if self.STORAGE_BACKEND == "supabase":
            need += ["SUPABASE_URL", "SUPABASE_KEY"]
        present = [name for name in need if not _present(getattr(self, name))]
        if "API_KEY" in present and _present(self.API_KEYS):
            present.remove("API_KEY")  # named keys are admin keys too
        return present

    def api_keys(self) -> dict[str, str]:
        """Admin keys by name: API_KEY as "default", then API_KEYS' "name:key" entries.
        Errors name the entry by position, never its value."""
        keys: dict[str, str] = {}
        if self.API_KEY is not None and self.API_KEY.get_secret_value():
            keys["default"] = self.API_KEY.get_secret_value()
        raw = self.API_KEYS.get_secret_value() if self.API_KEYS is not None else ""
        for n, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
            if not entry:
                continue
            name, sep, key = entry.partition(":")
            name, key = name.strip(), key.strip()
            if not sep or not name or not key:
                raise ConfigError(f"API_KEYS: entry {n} must be name:key")
            if name in keys:
                raise ConfigError(f"API_KEYS: entry {n} repeats the name {name!r}"
                                  + (" (API_KEY is named default)" if name == "default"
                                     else ""))
            keys[name] = key
        return keys

    def start_warnings(self) -> list[str]:
        """What a start should say at WARNING: production on a fallback asked for by name."""
        if self.ENVIRONMENT != "production":
            return []
        warnings = []
        if self.IMAGE_PROVIDER == "demo":
            warnings.append("ENVIRONMENT=production with IMAGE_PROVIDER=demo: images are "
                            "placeholders from the demo model, not OpenAI")
        if self.STORAGE_BACKEND == "local":
            warnings.append("ENVIRONMENT=production with STORAGE_BACKEND=local: images are "
                            f"written to {self.LOCAL_STORAGE_DIR} on this instance's disk")
        return warnings

    @property
    def lease_s(self) -> float:
        return self.TASK_LEASE_S

    @property
    def provider_name(self) -> str:
        assert self.IMAGE_PROVIDER is not None
        return self.IMAGE_PROVIDER

    @property
    def storage_name(self) -> str:
        assert self.STORAGE_BACKEND is not None
        return self.STORAGE_BACKEND

    def secret_values(self) -> list[str]:
        """Every secret this process knows, so log filters can redact them."""
        values = []
        for name in ("OPENAI_API_KEY", "SUPABASE_KEY", "API_KEY", "TASK_SECRET"):
            secret = getattr(self, name)
            if secret is not None and secret.get_secret_value():
                values.append(secret.get_secret_value())
        values += [key for name, key in self.api_keys().items() if name != "default"]
        if self.JOB_WEBHOOK_URL is not None and self.JOB_WEBHOOK_URL.get_secret_value():
            values.append(self.JOB_WEBHOOK_URL.get_secret_value())
        if self.DATABASE_URL is not None:
            from sqlalchemy.engine import make_url

            try:
                password = make_url(self.DATABASE_URL.get_secret_value()).password
            except Exception:
                password = None
            if password:
                values.append(str(password))
        return values


def _present(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return bool(value)


def parse_origins(value: object) -> object:
    """CORS_ORIGINS as a JSON list (the guide's form), or comma- or space-separated; a
    trailing slash is dropped (browsers send the origin without one)."""
    if not isinstance(value, str):
        return value
    raw = value.strip()
    if raw.startswith("["):
        try:
            items: Any = json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError("CORS_ORIGINS is not a valid JSON list; accepted forms: "
                              '["https://a.example", "https://b.example"], '
                              "https://a.example,https://b.example or space-separated"
                              ) from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError("CORS_ORIGINS must be a JSON list of strings")
    else:
        items = raw.replace(",", " ").split()
    origins = []
    for item in items:
        origin = item.strip().rstrip("/")
        if not origin:
            continue
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc
                              or parts.path):
            raise ConfigError(f"CORS_ORIGINS: {origin!r} is not an origin; write "
                              "scheme://host[:port], e.g. https://app.example.com")
        origins.append(origin)
    return origins


_SECRET_FIELDS = frozenset({"DATABASE_URL", "OPENAI_API_KEY", "SUPABASE_KEY", "API_KEY",
                            "TASK_SECRET", "DASHBOARD_PASSWORD"})


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each invalid variable and what it accepts; secret values are
    never echoed."""
    parts = []
    for err in exc.errors():
        loc = err.get("loc") or ("settings",)
        name = str(loc[0])
        msg = str(err.get("msg", "invalid"))
        if name in _SECRET_FIELDS or "input" not in err:
            parts.append(f"{name}: {msg}")
        else:
            parts.append(f"{name}={str(err['input'])[:60]!r}: {msg}")
    return "; ".join(parts)


def load_settings() -> Settings:
    """get_settings(), with a pydantic ValidationError turned into a one-line ConfigError."""
    try:
        return get_settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process settings, read once; tests call ``get_settings.cache_clear()``."""
    return Settings()
