"""The station YAML explainer section: defaults, what each backend needs, no keys in plain text."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.loader import load_station, validate_files
from config.service import load_settings
from tests.config.conftest import VALID_STATION, StationWriter


def test_explainer_is_off_by_default(write_station: StationWriter) -> None:
    station = load_station(write_station())
    assert station.explainer.backend == "none" and not station.explainer.enabled


def test_openai_explainer_loads(write_station: StationWriter) -> None:
    text = VALID_STATION + (
        "explainer:\n  backend: openai\n  model: qwen2.5vl:7b\n  base_url: http://127.0.0.1:11434/v1/\n"
        "  concurrency: 4\n"
    )
    cfg = load_station(write_station(text)).explainer
    assert (cfg.backend, cfg.model, cfg.base_url, cfg.concurrency) == (
        "openai",
        "qwen2.5vl:7b",
        "http://127.0.0.1:11434/v1",
        4,
    )


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ("  backend: openai\n  model: m\n", "needs a base_url"),
        ("  backend: transformers\n", "needs a model"),
        ("  backend: openai\n  model: m\n  base_url: 127.0.0.1:8000\n", "http:// or https://"),
        ("  backend: gpt\n", "backend"),
        ("  backend: openai\n  model: m\n  base_url: http://h/v1\n  api_key: sk-123\n", "api_key"),
        ("  backend: openai\n  model: m\n  base_url: http://h/v1\n  api_key_env: sk-12.3\n", "NAME"),
        ("  backend: none\n  max_pending: 0\n", "max_pending"),
    ],
)
def test_bad_explainer_settings_are_reported_with_their_line(
    write_station: StationWriter, section: str, says: str
) -> None:
    path = write_station(VALID_STATION + "explainer:\n" + section)
    problems = validate_files([path])
    assert problems and any(says in p for p in problems), problems
    assert all(f"{path}:" in p for p in problems)


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEWATCH_EXPLAINER_API_KEY", "sk-secret")
    settings = load_settings()
    assert settings.explainer_api_key is not None
    assert settings.explainer_api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(settings)


def test_every_key_the_demo_file_documents_is_valid() -> None:
    import re

    import yaml

    from config.explainer import ExplainerSettings

    demo = (Path(__file__).parents[2] / "config" / "stations" / "demo.yaml").read_text()
    section = demo[demo.index("\nexplainer:") :]
    # the commented-out keys, switched on: the documented names and example values must be valid
    uncommented = re.sub(r"^  # ([a-z_]+: \S+)$", r"  \1", section, flags=re.MULTILINE)
    data = yaml.safe_load(uncommented)["explainer"] | {"backend": "openai"}
    cfg = ExplainerSettings.model_validate(data)
    assert set(data) == set(ExplainerSettings.model_fields)  # every setting is documented
    assert cfg.base_url == "http://127.0.0.1:11434/v1"
