"""A job's name, tags, submitter and webhook: validated once, pure, every error naming its
field. The webhook URL may carry a secret (Slack's do), so no message ever repeats it."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.errors import InvalidInput

MAX_NAME_CHARS = 200
MAX_TAGS = 20
MAX_TAG_CHARS = 40
MAX_WEBHOOK_CHARS = 2000
MAX_SUBMITTER_CHARS = 320  # an email address at most
_TAG = re.compile(r"^[a-z0-9][a-z0-9._:-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class JobMeta:
    name: str | None = None
    tags: tuple[str, ...] = ()
    submitted_by: str | None = None
    webhook_url: str | None = None


def _optional_text(value: object, field: str, max_chars: int) -> str | None:
    """``value`` stripped, or None when absent or blank; InvalidInput naming ``field`` for
    anything but a string, or one over ``max_chars`` (its length named, never its text)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    text = value.strip()
    if len(text) > max_chars:
        raise InvalidInput(field, f"at most {max_chars} characters (got {len(text)})")
    return text or None


def clean_name(name: object) -> str | None:
    text = _optional_text(name, "name", MAX_NAME_CHARS)
    if text is None:
        return None
    if _CONTROL.search(text):
        raise InvalidInput("name", "must not contain control characters (tabs, newlines)")
    return text


def clean_tag(tag: object, field: str = "tag") -> str:
    if not isinstance(tag, str):
        raise InvalidInput(field, "must be a string")
    text = tag.strip().lower()
    if not text:
        raise InvalidInput(field, "must not be blank")
    if len(text) > MAX_TAG_CHARS:
        raise InvalidInput(field, f"at most {MAX_TAG_CHARS} characters (got {len(text)})")
    if not _TAG.match(text):
        raise InvalidInput(field, "letters, digits and . _ : - only, starting with a letter "
                                  "or digit")
    return text


def clean_tags(tags: object) -> tuple[str, ...]:
    """Lower-cased, duplicates dropped, order kept."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = [t for t in tags.split(",") if t.strip()]
    if not isinstance(tags, list | tuple):
        raise InvalidInput("tags", "must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise InvalidInput("tags", f"at most {MAX_TAGS} tags (got {len(tags)})")
    cleaned: list[str] = []
    for i, tag in enumerate(tags):
        text = clean_tag(tag, f"tags[{i}]")
        if text not in cleaned:
            cleaned.append(text)
    return tuple(cleaned)


def clean_webhook_url(url: object, *, require_https: bool) -> str | None:
    text = _optional_text(url, "webhook_url", MAX_WEBHOOK_CHARS)
    if text is None:
        return None
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        raise InvalidInput("webhook_url", "is not a valid URL") from None
    allowed = ("https",) if require_https else ("https", "http")
    if parts.scheme not in allowed or not host:
        raise InvalidInput("webhook_url", "must be an https:// URL" if require_https
                           else "must be an http:// or https:// URL")
    if _CONTROL.search(text) or " " in text:
        raise InvalidInput("webhook_url", "must not contain spaces or control characters")
    if require_https and _internal_host(host):
        # Production workers sit beside metadata servers and private services: a webhook
        # must not be a way to make them POST there.
        raise InvalidInput("webhook_url", "must not point at a loopback, private or "
                                          "link-local address")
    return text


def _internal_host(host: str) -> bool:
    name = host.strip("[]").lower().rstrip(".")
    if name in ("localhost", "metadata.google.internal", "metadata") or \
            name.endswith((".localhost", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # a DNS name: resolved by the sender, not here
    return bool(address.is_loopback or address.is_private or address.is_link_local
                or address.is_reserved or address.is_unspecified or address.is_multicast)


def clean_meta(*, name: object = None, tags: object = None, webhook_url: object = None,
               submitted_by: str | None = None, production: bool = False) -> JobMeta:
    who = (submitted_by or "").strip()[:MAX_SUBMITTER_CHARS] or None
    return JobMeta(name=clean_name(name), tags=clean_tags(tags), submitted_by=who,
                   webhook_url=clean_webhook_url(webhook_url, require_https=production))


def redact_url(url: str | None) -> str:
    """What a log line or page may say about a webhook: its scheme and host only."""
    if not url:
        return "(none)"
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or '?'}/…"
    except ValueError:
        return "(invalid URL)"
