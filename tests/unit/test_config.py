"""The config fails at start with the file, the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiosk_config import DEFAULT_CONFIG_FILE, load_config, load_experiment
from kiosk_config.loader import _read_toml
from runtime.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "kiosk.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_default_file_is_complete_and_matches_schema_defaults():
    cfg = load_config(environ={})
    assert cfg.server.host == "127.0.0.1"
    assert cfg.devices.preference == ["NPU", "GPU", "CPU"]
    # every table in the default file is a real table of the schema
    assert set(_read_toml(DEFAULT_CONFIG_FILE)) <= set(type(cfg).model_fields)


def test_unknown_key_names_file_and_key(tmp_path):
    p = write(tmp_path, "[server]\nprot = 9000\n")
    with pytest.raises(ConfigError) as err:
        load_config(p, environ={})
    assert (
        str(p) in str(err.value)
        and "server.prot" in str(err.value)
        and "remove it" in str(err.value)
    )


def test_wrong_type_and_range_say_what_is_allowed(tmp_path):
    p = write(tmp_path, '[server]\nport = 70000\n[devices]\npreference = ["CPU", "TPU"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(p, environ={})
    text = str(err.value)
    assert "server.port" in text and "<= 65535" in text
    assert "devices.preference.1" in text and "'NPU', 'GPU' or 'CPU'" in text


def test_env_overrides_win_and_bad_env_is_named(tmp_path):
    p = write(tmp_path, "[server]\nport = 9000\n")
    cfg = load_config(
        p,
        environ={
            "KIOSK_SERVER__PORT": "9100",
            "KIOSK_DEVICES__PREFERENCE": '["CPU"]',
            "KIOSK_MODEL_CACHE": str(tmp_path / "mc"),
        },
    )
    assert cfg.server.port == 9100 and cfg.devices.preference == ["CPU"]
    assert cfg.paths.model_cache == tmp_path / "mc"
    with pytest.raises(ConfigError, match="KIOSK_SERVER__PORT__X does not name a config key"):
        load_config(p, environ={"KIOSK_SERVER__PORT__X": "1"})
    with pytest.raises(ConfigError, match="servr"):
        load_config(p, environ={"KIOSK_SERVR__PORT": "1"})
    # script variables without a double underscore are not config keys
    assert (
        load_config(p, environ={"KIOSK_REQUIRE_MODELS": "1", "KIOSK_VENV": "/x"}).server.port
        == 9000
    )
    with pytest.raises(ConfigError, match=r"KIOSK_\* environment"):
        load_config(p, environ={"KIOSK_SERVER__PORT": "many"})


def test_unreadable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[server\n"), environ={})
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad, environ={})


def test_duplicate_device_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="each device may appear once"):
        load_config(write(tmp_path, '[devices]\npreference = ["CPU", "CPU"]\n'), environ={})


def test_experiment_yaml_is_validated(tmp_path):
    assert load_experiment().id == "default-v3"
    assert load_experiment().generator.compose == "quote"
    bad = tmp_path / "x.yaml"
    bad.write_text("id: x\nretriever:\n  mode: fuzzy\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"retriever\.mode"):
        load_experiment(bad)
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_experiment(bad)
