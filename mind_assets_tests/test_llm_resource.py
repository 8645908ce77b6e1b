"""The `llm` resource holds the engine's settings as declared once in settings.py: every one of
them, no secret, configurable through Dagster run config, and the offline engine's configuration
built from the same declaration."""

from __future__ import annotations

import json

import pytest
from dagster import DagsterInvalidConfigError, asset, materialize

from mind_assets.llm.hardware import choose_engine_tuning, detect_host
from mind_assets.llm.offline_engine import OfflineEngineConfig
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import EngineSettings, OfflineEngineSettings, get_settings


def test_the_resource_holds_every_engine_setting_and_nothing_secret(settings, monkeypatch):
    key = "sk-never-a-resource-field"
    monkeypatch.setenv("MIND_SERVER_API_KEY", key)
    monkeypatch.setenv("MIND_DTYPE", "float32")
    monkeypatch.setenv("MIND_SERVER_URLS", json.dumps(["http://10.0.0.5:8000"]))
    monkeypatch.setenv("MIND_SEED", "7")
    settings = get_settings()
    llm = LLMResource.from_settings(settings)
    assert set(LLMResource.model_fields) == set(EngineSettings.model_fields) | {"models_dir"}
    assert {n: getattr(llm, n) for n in EngineSettings.model_fields} == {
        n: getattr(settings, n) for n in EngineSettings.model_fields
    }
    assert llm.dtype == "float32" and llm.seed == 7 and llm.models_dir == str(settings.models_dir)
    assert key not in json.dumps(llm.model_dump(), default=str)
    assert not any("SecretStr" in str(f.annotation) for f in LLMResource.model_fields.values())


@asset
def engine_probe(llm: LLMResource) -> dict:
    return {n: getattr(llm, n) for n in ("engine_mode", "server_urls", "dtype", "threads", "seed")}


def probe(settings, instance, llm_config: dict | None):
    return materialize(
        [engine_probe],
        resources={"llm": LLMResource.from_settings(settings)},
        run_config={"resources": {"llm": {"config": llm_config}}} if llm_config else None,
        instance=instance,
        raise_on_error=False,
    )


def test_run_config_sets_the_engine_settings_of_the_resource(settings, instance):
    overrides = {
        "engine_mode": "server",
        "server_urls": ["http://10.0.0.5:8000"],
        "dtype": "float32",
        "threads": 3,
        "seed": 11,
    }
    result = probe(
        settings, instance, {**LLMResource.from_settings(settings).model_dump(), **overrides}
    )
    assert result.success
    assert result.output_for_node("engine_probe") == overrides


def test_a_partial_run_config_is_refused_rather_than_filled_with_declared_defaults(
    settings, instance, monkeypatch
):
    monkeypatch.setenv("MIND_ENGINE_MODE", "server")
    monkeypatch.setenv("MIND_SERVER_URLS", json.dumps(["http://10.0.0.5:8000"]))
    settings = get_settings()
    assert probe(settings, instance, None).output_for_node("engine_probe")["engine_mode"] == (
        "server"
    )
    with pytest.raises(DagsterInvalidConfigError, match="Missing required config entries"):
        probe(settings, instance, {"dtype": "float32", "models_dir": str(settings.models_dir)})


def test_a_choice_outside_its_literal_is_refused_by_run_config(settings, instance):
    config = {**LLMResource.from_settings(settings).model_dump(), "engine_mode": "cluster"}
    with pytest.raises(DagsterInvalidConfigError, match="not in enum type"):
        probe(settings, instance, config)


def test_the_offline_engine_config_is_keyed_by_the_vllm_settings_alone(settings):
    llm = LLMResource.from_settings(settings)
    tuning = choose_engine_tuning("float32", detect_host(), max_model_len=llm.max_model_len)

    def config(resource: LLMResource) -> OfflineEngineConfig:
        vllm = resource.model_dump(include=set(OfflineEngineSettings.model_fields))
        return OfflineEngineConfig(model_path="m", model_name="m", tuning=tuning, **vllm)

    same = config(llm)
    assert config(llm) == same and hash(config(llm)) == hash(same)
    # Settings the in-process engine is not built with do not load another one...
    other_run = llm.model_copy(update={"keep_engine_between_runs": False, "server_urls": ["x"]})
    assert config(other_run) == same
    # ...those it is built with do.
    assert config(llm.model_copy(update={"max_num_seqs": 8})) != same
    assert config(llm.model_copy(update={"seed": 1})).seed == 1
