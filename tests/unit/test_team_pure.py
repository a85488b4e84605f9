"""Pure parts of the team features: job metadata validation, named API keys, search
patterns, the webhook message and its backoff."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import SecretStr

from core.config import Settings
from core.errors import ConfigError, InvalidInput
from core.jobs.meta import clean_meta, clean_tags, clean_webhook_url, redact_url
from core.jobs.notify import JobEnd, backoff_s, message, slack_escape
from core.jobs.search import SearchQuery, like_pattern
from core.startup import check_settings
from worker.deps import resolve_key


@pytest.mark.parametrize(("tags", "expected"), [
    (None, ()),
    (["Spring", "spring", " catalogue "], ("spring", "catalogue")),  # lower, deduplicated
    ("a, b,,c", ("a", "b", "c")),                                     # the dashboard's text
    (["v1.2", "team:art", "x-y_z"], ("v1.2", "team:art", "x-y_z")),
])
def test_tags(tags: object, expected: tuple[str, ...]) -> None:
    assert clean_tags(tags) == expected


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"name": "x" * 201}, "name"),
    ({"name": "tab\there"}, "name"),
    ({"name": 5}, "name"),
    ({"tags": ["ok", ""]}, "tags[1]"),
    ({"tags": ["-leading"]}, "tags[0]"),
    ({"tags": ["x" * 41]}, "tags[0]"),
    ({"tags": {"a": 1}}, "tags"),
    ({"webhook_url": "javascript:alert(1)"}, "webhook_url"),
    ({"webhook_url": "https://hooks.example.com/a b"}, "webhook_url"),
])
def test_bad_meta_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        clean_meta(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_webhook_url_rules_and_redaction() -> None:
    slack = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
    assert clean_webhook_url(slack, require_https=True) == slack
    with pytest.raises(InvalidInput, match="https://") as caught:
        clean_webhook_url("http://hooks.example.com/x/SECRET", require_https=True)
    assert "SECRET" not in caught.value.message
    assert redact_url(slack) == "https://hooks.slack.com/…"
    assert clean_webhook_url("  ", require_https=True) is None
    for internal in ("https://169.254.169.254/computeMetadata/v1/",
                     "https://metadata.google.internal/x", "https://10.0.0.8/hook",
                     "https://[::1]/hook", "https://localhost/hook"):
        with pytest.raises(InvalidInput, match="loopback, private"):
            clean_webhook_url(internal, require_https=True)
    # Outside production the tests' loopback receivers are fine.
    assert clean_webhook_url("http://127.0.0.1:9/hook", require_https=False)


def test_named_api_keys_parse_and_errors_never_show_values() -> None:
    settings = Settings.model_construct(API_KEY=SecretStr("d" * 20),
                                        API_KEYS=SecretStr("ci:c1c1c1, art : a2a2a2"))
    assert settings.api_keys() == {"default": "d" * 20, "ci": "c1c1c1", "art": "a2a2a2"}
    for raw, needle in [("ci:k1,broken", "entry 2 must be name:key"),
                        ("ci:k1,ci:k2", "entry 2 repeats the name 'ci'"),
                        ("default:k9", "API_KEY is named default")]:
        bad = Settings.model_construct(API_KEY=SecretStr("d" * 20), API_KEYS=SecretStr(raw))
        with pytest.raises(ConfigError, match=needle) as caught:
            bad.api_keys()
        assert "k1" not in caught.value.message and "k9" not in caught.value.message


def test_resolve_key_compares_every_key() -> None:
    keys = {"default": "aaaa", "ci": "bbbb"}
    assert resolve_key("bbbb", keys) == "ci"
    assert resolve_key("aaaa", keys) == "default"
    assert resolve_key("bbb", keys) is None and resolve_key("", keys) is None


def test_search_query_and_like_pattern() -> None:
    assert like_pattern("100%_a\\b") == "%100\\%\\_a\\\\b%"
    assert SearchQuery.of(text="  teapot ").text == "teapot"
    assert not SearchQuery.of(text=" ", tag="", submitted_by="").searching
    assert SearchQuery.of(tag="Spring").tag == "spring"
    for kwargs, field in [({"text": "ab"}, "q"), ({"tag": "a b"}, "tag"),
                          ({"status": "done"}, "status"), ({"text": "x" * 201}, "q"),
                          ({"text": "tea\x00pot"}, "q"), ({"submitted_by": "a\x00"},
                                                          "submitted_by")]:
        with pytest.raises(InvalidInput) as caught:
            SearchQuery.of(**kwargs)  # type: ignore[arg-type]
        assert caught.value.field == field


@pytest.mark.parametrize(("attempt", "delay_s"), [
    (1, 5.0), (2, 10.0), (3, 20.0),   # doubling from the base
    (10, 900.0),                      # capped
])
def test_backoff(attempt: int, delay_s: float) -> None:
    assert backoff_s(attempt, base_s=5.0, max_s=900.0) == delay_s


def test_message_is_slack_shaped_and_escaped() -> None:
    end = JobEnd(id="0b7e7c1a-0000-4000-8000-000000000001", name="<b>Spring</b> & co",
                 status="completed_with_errors", total=60, succeeded=58, failed=2,
                 cancelled=0, cost_usd=Decimal("2.3200"), submitted_by="ci")
    body = message(end, dashboard_url="https://dash.example.com/")
    assert set(body) == {"text", "blocks"}
    assert body["text"] == ("<b>Spring</b> & co completed with errors: 58 succeeded, "
                            "2 failed, 0 cancelled of 60 · $2.3200 · https://dash.example.com"
                            "/job?job_id=0b7e7c1a-0000-4000-8000-000000000001")
    section = body["blocks"][0]["text"]
    assert section["type"] == "mrkdwn"
    assert "*&lt;b&gt;Spring&lt;/b&gt; &amp; co*" in section["text"]
    assert section["text"].endswith("|Open the job>")
    assert "submitted by ci" in body["blocks"][1]["elements"][0]["text"]
    no_link = message(end, dashboard_url=None)
    assert "job?job_id" not in no_link["text"]
    assert slack_escape("a<b>&") == "a&lt;b&gt;&amp;"


def test_default_webhook_is_checked_at_start_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="JOB_WEBHOOK_URL must be an http") as caught:
        check_settings(Settings(JOB_WEBHOOK_URL=SecretStr("ftp://hooks.example.com/SECRET"),
                                _env_file=None))  # type: ignore[call-arg]
    assert "SECRET" not in caught.value.message
