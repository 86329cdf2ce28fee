import subprocess
import sys

import msgspec
import pytest

from service.settings import ConfigPatch, Settings, SettingsError


def test_defaults_match_the_design() -> None:
    settings = Settings.load([], environ={})
    assert settings.port == 4777 and settings.admin_token is None
    config = settings.config
    assert (config.translation_delay, config.error_rate, config.rate_limit) == (15.0, 0.2, 5)
    assert (config.premium_speedup, config.max_attempts, config.workers) == (0.5, 3, 4)
    assert config.auto_process is True and config.fault_rate == 0.0


def test_env_then_flags_override() -> None:
    env = {"TRANSLATION_DELAY": "2.5", "AUTO_PROCESS": "false", "PORT": "5000"}
    settings = Settings.load(["--port", "6000", "--error-rate", "0.5"], environ=env)
    assert settings.port == 6000
    assert settings.config.translation_delay == 2.5
    assert settings.config.auto_process is False
    assert settings.config.error_rate == 0.5


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"ERROR_RATE": "1.5"}, "ERROR_RATE"),
        ({"TRANSLATION_DELAY": "-1"}, "TRANSLATION_DELAY"),
        ({"WORKERS": "many"}, "WORKERS"),
        ({"PORT": "70000"}, "PORT"),
        ({"ADMIN_TOKEN": "short"}, "ADMIN_TOKEN"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load([], environ=env)
    assert info.value.name == name


def test_cli_exits_2_naming_the_bad_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--error-rate", "7"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "error_rate" in result.stderr


def test_config_patch_validates_and_applies_only_given_fields() -> None:
    config = Settings().config
    patch = msgspec.json.decode(b'{"error_rate": 0.3}', type=ConfigPatch)
    new = patch.apply(config)
    assert new.error_rate == 0.3 and new.translation_delay == config.translation_delay
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"workers": 0}', type=ConfigPatch)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"bogus": 1}', type=ConfigPatch)
