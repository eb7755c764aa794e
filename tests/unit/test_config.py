"""Settings: defaults < pacs.toml < PACS_* environment < flags."""

from pathlib import Path

import pytest

from pacs.config import Settings, load_settings, settings_from_dict, settings_to_dict
from pacs.errors import ConfigError


def test_defaults_need_no_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.ae_title == "PACS"
    assert settings.dicom_port == 11112
    assert settings.http_port == 8080
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_storage_dir == settings.data_dir / "objects"
    assert not settings.accept_unknown_aes


def test_toml_then_environment_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "pacs.toml"
    toml.write_text('[pacs]\nae_title = "FROM_TOML"\ndicom_port = 104\nhttp_port = 9000\n')
    env = {"PACS_DICOM_PORT": "4242", "PACS_ACCEPT_UNKNOWN_AES": "yes", "UNRELATED": "x"}
    settings = load_settings(toml, environ=env, http_port=9100)
    assert settings.ae_title == "FROM_TOML"
    assert settings.dicom_port == 4242
    assert settings.accept_unknown_aes is True
    assert settings.http_port == 9100


def test_flat_toml_and_pacs_config_variable(tmp_path: Path) -> None:
    toml = tmp_path / "elsewhere.toml"
    toml.write_text('duplicate_policy = "keep"\n')
    settings = load_settings(environ={"PACS_CONFIG": str(toml)})
    assert settings.duplicate_policy == "keep"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"PACS_DICOM_PORT": "eleven"}, "dicom_port"),
        ({"PACS_DUPLICATE_POLICY": "merge"}, "must be one of"),
        ({"PACS_ACCEPT_UNKNOWN_AES": "perhaps"}, "true or false"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(environ=env)


def test_unknown_keys_in_toml_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "pacs.toml"
    toml.write_text("ae_titel = 'TYPO'\n")
    with pytest.raises(ConfigError, match="unknown setting 'ae_titel'"):
        load_settings(toml, environ={})


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "pacs.toml"
    toml.write_text("ae_title = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(toml, environ={})


def test_round_trip_for_worker_processes(tmp_path: Path) -> None:
    settings = load_settings(environ={}, data_dir=tmp_path, ae_title="X", s3_secure=False)
    assert settings_from_dict(settings_to_dict(settings)) == settings


def test_database_url_overrides_sqlite() -> None:
    settings = Settings(database_url="postgresql://u@h/db")
    assert settings.effective_database_url == "postgresql://u@h/db"
    assert not settings.is_sqlite
