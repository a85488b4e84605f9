"""Settings: the one place the environment is read.

Names follow the deployment guide (ENVIRONMENT, USE_CLOUD_TASKS, GCP_PROJECT, ...), so a
deployment configured for the guide keeps working.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.errors import ConfigError, InvalidInput

DEFAULT_OPENAI_IMAGE_MODEL = "gpt-image-1.5"


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

    # delivery and retries
    MAX_ATTEMPTS: int = Field(default=5, ge=1, le=100)
    RETRY_MIN_BACKOFF_S: float = Field(default=1.0, ge=0.0)
    RETRY_MAX_BACKOFF_S: float = Field(default=300.0, ge=0.0)
    RETRY_MAX_DOUBLINGS: int = Field(default=5, ge=0, le=30)
    # How long Cloud Tasks (or the local dispatcher) waits for one delivery.
    DISPATCH_DEADLINE_S: float = Field(default=300.0, ge=1.0, le=1800.0)
    # The claim lease must outlast the dispatch deadline, or a redelivery would start a
    # second model call while the first still runs. None = deadline + 30 s.
    TASK_LEASE_S: float | None = Field(default=None, ge=1.0)
    LOCAL_MAX_CONCURRENCY: int = Field(default=5, ge=1, le=1000)
    # AIMD on the local dispatcher's in-flight limit (core.dispatch.limits): up to
    # LOCAL_MAX_CONCURRENCY, halved on 429/503 at most once per cooldown, and the queue held
    # for a 429's Retry-After. Off = a fixed LOCAL_MAX_CONCURRENCY with per-task backoff.
    ADAPTIVE_CONCURRENCY: bool = True
    ADAPTIVE_MIN_CONCURRENCY: int = Field(default=1, ge=1, le=1000)
    ADAPTIVE_COOLDOWN_S: float = Field(default=1.0, ge=0.0)
    # The worker's provider client waits (at most this long) when the provider's
    # Retry-After / x-ratelimit-* headers say the next call would be refused
    # (core.ratelimit); 0 = call anyway and let the queue retry.
    PROVIDER_RATE_WAIT_S: float = Field(default=30.0, ge=0.0)
    RUN_DISPATCHER: bool = True
    DISPATCH_POLL_S: float = Field(default=0.5, gt=0)
    SWEEP_INTERVAL_S: float = Field(default=60.0, gt=0)
    # Cloud Tasks mode: a queued row untouched this long (or a running one whose lease ran
    # out this long ago) is checked against the queue; if the queue no longer holds its task
    # it is handed over again (core.sweeper.sweep_stranded). Above the queue's max backoff.
    STRANDED_AFTER_S: float = Field(default=1800.0, ge=0.0)

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
    # Named admin keys, "name1:key1,name2:key2", beside API_KEY (which is named "default");
    # the name a request's key resolves to is recorded as its jobs' submitted_by.
    API_KEYS: SecretStr | None = None
    # Who may sign in to the dashboard through OIDC: exact emails and email domains
    # (comma-separated, case-insensitive). Production with OIDC needs one of them;
    # DASHBOARD_ALLOWED_DOMAINS=* lets any account in deliberately.
    DASHBOARD_ALLOWED_EMAILS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    DASHBOARD_ALLOWED_DOMAINS: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # notifications and retention (core.notify, core.retention)
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

    @field_validator("CORS_ORIGINS", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("DASHBOARD_ALLOWED_EMAILS", "DASHBOARD_ALLOWED_DOMAINS", mode="before")
    @classmethod
    def _split_lower(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip().lower() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _defaults_and_production_checks(self) -> Settings:
        if self.IMAGE_PROVIDER is None:
            self.IMAGE_PROVIDER = "openai" if self.OPENAI_API_KEY else "demo"
        if self.STORAGE_BACKEND is None:
            self.STORAGE_BACKEND = (
                "supabase" if self.SUPABASE_URL and self.SUPABASE_KEY else "local"
            )
        if self.TASK_LEASE_S is None:
            self.TASK_LEASE_S = self.DISPATCH_DEADLINE_S + 30.0
        if self.TASK_LEASE_S <= self.DISPATCH_DEADLINE_S:
            raise ConfigError(
                "TASK_LEASE_S must be longer than DISPATCH_DEADLINE_S, or a redelivery "
                "would run beside a live attempt"
            )
        self.api_keys()  # a malformed API_KEYS stops the start, naming the entry
        if self.JOB_WEBHOOK_URL is not None:
            from core.job_meta import clean_webhook_url

            try:
                clean_webhook_url(self.JOB_WEBHOOK_URL.get_secret_value(),
                                  require_https=self.ENVIRONMENT == "production")
            except InvalidInput as exc:  # the message never repeats the URL
                raise ConfigError(f"JOB_WEBHOOK_URL {exc.message.split(': ', 1)[-1]}") from None
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
        need: list[str] = ["API_KEY", "DATABASE_URL"]
        if self.USE_CLOUD_TASKS:
            need += ["GCP_PROJECT", "WORKER_URL", "CLOUD_TASKS_SERVICE_ACCOUNT"]
        else:
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

    @property
    def lease_s(self) -> float:
        assert self.TASK_LEASE_S is not None
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process settings, read once; tests call ``get_settings.cache_clear()``."""
    return Settings()
