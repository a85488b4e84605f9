"""The Submit page's OpenAI part under AppTest: today's models, delivery mode with both
modes' cost side by side, confirmations, image options; the Job page's batch section."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import Engine

from core import db
from core.config import Settings
from core.jobs import lifecycle, views
from tests.dashboard.conftest import open_page


@pytest.fixture
def openai_env(env: dict[str, str]) -> dict[str, str]:
    # OPENAI_IMAGE_MODEL=gpt-image-1 (shut down) is refused at start
    # (tests/integration/test_config_errors.py), so it can never be preselected.
    env.update(IMAGE_PROVIDER="openai", OPENAI_API_KEY="sk-test-not-used")
    return env


@pytest.mark.usefixtures("openai_env")
def test_gpt_image_2_is_the_default_and_gpt_image_1_is_not_offered(settings: Settings) -> None:
    at = open_page("app_pages/submit.py")
    model = at.selectbox(key="model")
    assert model.value == "gpt-image-2"
    assert "gpt-image-2" in model.options and "gpt-image-1" not in model.options
    assert "chatgpt-image-latest" in model.options
    at.radio(key="mode").set_value("batch").run()
    batch_models = at.selectbox(key="model").options
    assert "gpt-image-2" in batch_models and "chatgpt-image-latest" not in batch_models


@pytest.mark.usefixtures("openai_env")
def test_batch_mode_submit_shows_both_costs_and_records_the_options(
    settings: Settings, engine: Engine
) -> None:
    at = open_page("app_pages/submit.py")
    at.text_area(key="prompts_text").set_value("a chair\na lamp").run()
    at.radio(key="mode").set_value("batch")
    at.selectbox(key="quality").set_value("high").run()
    at.selectbox(key="output_format").set_value("webp").run()
    at.number_input(key="output_compression").set_value(80)
    at.selectbox(key="background").set_value("opaque").run()
    # 2 x $0.211 (gpt-image-2, 1024x1024, high): $0.422 realtime, half in batch.
    assert [m.value for m in at.metric] == ["2", "2", "$0.211"]
    table = at.table[0].value
    assert list(table["estimated cost"]) == ["$0.422", "$0.211"]
    at.button(key="submit").click().run()
    job = views.list_jobs(engine=engine)[0]
    assert (job.mode, job.model, job.quality, job.output_format, job.output_compression,
            job.background) == ("batch", "gpt-image-2", "high", "webp", 80, "opaque")
    assert job.estimated_cost_usd == Decimal("0.211")
    assert job.status == "pending"


@pytest.mark.usefixtures("openai_env")
def test_auto_quality_and_a_high_estimate_ask_for_a_confirmation(
    settings: Settings, engine: Engine
) -> None:
    at = open_page("app_pages/submit.py")
    at.text_area(key="prompts_text").set_value("\n".join(f"a chair {i}" for i in range(300))
                                               ).run()
    at.selectbox(key="quality").set_value("auto").run()
    assert any("auto" in w.value for w in at.warning)
    at.button(key="submit").click().run()
    assert any("Tick the confirmation" in e.value for e in at.error)
    assert views.list_jobs(engine=engine) == []
    at.selectbox(key="quality").set_value("high")
    at.number_input(key="count_per_prompt").set_value(1).run()
    # 300 x $0.211 = $63.30 > $50
    assert any("above $50.00" in w.value for w in at.warning)
    at.checkbox(key="confirm_cost").check().run()
    at.button(key="submit").click().run()
    assert len(views.list_jobs(engine=engine)) == 1


@pytest.mark.usefixtures("openai_env")
def test_a_model_without_rates_needs_its_own_confirmation(settings: Settings,
                                                         engine: Engine) -> None:
    at = open_page("app_pages/submit.py")
    at.text_area(key="prompts_text").set_value("a chair").run()
    at.selectbox(key="model").set_value("gpt-image-2.6-flare").run()
    assert any("no price is known" in e.value.lower() for e in at.error)
    assert at.button(key="submit").disabled
    at.checkbox(key="confirm_unknown_price").check().run()
    at.checkbox(key="confirm_cost").check().run()  # no estimate either
    at.button(key="submit").click().run()
    assert views.list_jobs(engine=engine)[0].model == "gpt-image-2.6-flare"


def test_job_page_shows_each_batch_state_and_the_billed_cost(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.batch.runner import BatchRunner, make_client
    from core.config import get_settings
    from core.jobs.validation import BatchSpec
    from core.storage import get_storage
    from testing.openai_stub import OpenAIStub

    with OpenAIStub() as stub:
        env.update(IMAGE_PROVIDER="openai", OPENAI_API_KEY=stub.api_key,
                   OPENAI_BASE_URL=stub.base_url, BATCH_CHUNK_SIZE="2")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        settings = get_settings()
        options = lifecycle.options_for(settings, model="gpt-image-2", size="1024x1024",
                                   quality="low", mode="batch")
        job = lifecycle.submit_batch(BatchSpec(prompts=["a", "b", "c"], style="none",
                                          count_per_prompt=1), options=options,
                                settings=settings)
        runner = BatchRunner(settings, db.get_engine(), make_client(settings),
                             get_storage(settings))
        stub.batches.steps_per_status = 100
        runner.cycle()  # two batches, both validating
        at = open_page("app_pages/job.py", job_id=str(job.id))
        frame = next(d.value for d in at.dataframe if "openai batch" in d.value.columns)
        assert list(frame["state"]) == ["validating", "validating"]
        assert list(frame["requests"]) == [2, 1]
        stub.batches.steps_per_status = 1
        for _ in range(5):
            runner.cycle()
        at = open_page("app_pages/job.py", job_id=str(job.id))
        frame = next(d.value for d in at.dataframe if "openai batch" in d.value.columns)
        assert list(frame["state"]) == ["completed", "completed"]
        assert list(frame["completed"]) == [2, 1]
        assert any("Delivery: batch" in c.value and "billed so far $" in c.value
                   for c in at.caption)
        runner.close()
    get_settings.cache_clear()
