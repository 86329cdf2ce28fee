import subprocess
import sys

import msgspec
import pytest

from service.settings import (
    Config,
    ConfigPatch,
    Settings,
    SettingsError,
    documented,
    markdown_table,
    parser,
    replace_table,
)
from tests.conftest import ROOT


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


def test_readme_settings_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert replace_table(readme) == readme, "run `make docs` to regenerate the README's table"
    assert "| `ALLOWED_ORIGINS` `--allowed-origins` |" in markdown_table()


def test_every_setting_is_documented_once() -> None:
    names = [s.name for s in documented()]
    assert sorted(names) == sorted(
        (set(Settings.__struct_fields__) | set(Config.__struct_fields__)) - {"config"}
    )
    assert len(names) == len(set(names))
    assert all(s.description for s in documented())


def test_help_lists_every_option_with_description_default_unit_and_env() -> None:
    text = " ".join(parser("dubsim-server").format_help().split())  # undo the line wrapping
    assert text.startswith("usage: dubsim-server ")
    for s in documented():
        assert f"{s.flag} {s.env} {s.description}." in text
        assert f"Default: {s.default or 'unset'}" in text
        assert f"[env {s.env}]" in text
    assert "Default: 15; unit: s. [env TRANSLATION_DELAY]" in text
    assert "Default: 127.0.0.1. [env HOST]" in text


def test_help_names_the_program_it_was_started_as() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m service ")
    assert "ALLOWED_ORIGINS" in result.stdout
