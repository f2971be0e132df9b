"""Service settings: LINEWATCH_* variables override defaults; bad values are named clearly."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.service import ServiceSettings, load_settings

VARIABLES = ["DATA_DIR", "REDIS_URL", "DATABASE_URL", "DEVICE", "LOG_LEVEL"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(f"LINEWATCH_{name}", raising=False)
    monkeypatch.chdir(tmp_path)


def _error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    assert "Traceback" not in str(caught.value) and "pydantic" not in str(caught.value)
    return str(caught.value)


def test_defaults_are_embedded_services_in_the_working_directory(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.data_dir == tmp_path / ".linewatch"
    assert settings.redis_url is None and settings.embedded_redis
    assert settings.embedded_redis_path == tmp_path / ".linewatch" / "redis.db"
    assert settings.effective_database_url == f"sqlite:///{tmp_path}/.linewatch/linewatch.db"
    assert settings.device == "auto"
    assert settings.log_level == "INFO"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LINEWATCH_DATA_DIR", "var/lw")  # relative: made absolute
    monkeypatch.setenv("LINEWATCH_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("LINEWATCH_DATABASE_URL", "postgresql+psycopg://lw@db/linewatch")
    monkeypatch.setenv("LINEWATCH_DEVICE", " CUDA:1 ")
    monkeypatch.setenv("LINEWATCH_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.data_dir == tmp_path / "var" / "lw"
    assert settings.redis_url == "redis://redis:6379/0" and not settings.embedded_redis
    assert settings.effective_database_url == "postgresql+psycopg://lw@db/linewatch"
    assert settings.device == "cuda:1"
    assert settings.log_level == "DEBUG"


def test_keyword_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEWATCH_DEVICE", "cuda")
    assert load_settings(device="cpu").device == "cpu"


def test_blank_urls_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEWATCH_REDIS_URL", "")
    monkeypatch.setenv("LINEWATCH_DATABASE_URL", "  ")
    settings = load_settings()
    assert settings.embedded_redis and settings.effective_database_url.startswith("sqlite:///")


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "cuda1", "mps0", ""])
def test_bad_device_from_environment_is_named_with_what_is_expected(
    monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    monkeypatch.setenv("LINEWATCH_DEVICE", device)
    assert _error() == (
        f'LINEWATCH_DEVICE = "{device}": must be auto, cpu, cuda or cuda:N with N the GPU index, e.g. cuda:0'
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"device": "tpu"}, 'device = "tpu": must be auto, cpu, cuda or cuda:N'),
        ({"redis_url": "http://cache:6379"}, 'redis_url = "http://cache:6379": must start with'),
        ({"database_url": "linewatch.db"}, 'database_url = "linewatch.db": must be a SQLAlchemy'),
        ({"log_level": "loud"}, "log_level = \"LOUD\": must be one of 'DEBUG'"),
        (
            {"redis_ulr": "redis://x"},
            "redis_ulr = \"redis://x\": unknown key; did you mean 'redis_url'?",
        ),
    ],
)
def test_bad_overrides_are_named(overrides: dict[str, object], expected: str) -> None:
    assert _error(**overrides).startswith(expected)


def test_data_dir_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    assert f"{tmp_path / 'taken'} exists and is not a folder" in _error(data_dir=tmp_path / "taken")


def test_misspelt_variable_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LINEWATCH_REDIS_ULR", "redis://x")
    with caplog.at_level(logging.WARNING, logger="config.service"):
        settings = load_settings()
    assert settings.embedded_redis
    assert "unknown setting LINEWATCH_REDIS_ULR ignored" in caplog.text


def test_every_setting_is_documented() -> None:
    for name, field in ServiceSettings.model_fields.items():
        assert field.description, name
