"""`kiosk pack ...` and `kiosk sync` through the real CLI entry point."""

from __future__ import annotations

import json

import pytest
from fakes import FakeEmbedder

from runtime.cli import main
from runtime.packs.binding import binding_for_config
from runtime.packs.sample import PackKit
from runtime.packs.signing import load_private_key


@pytest.fixture
def setup(tmp_path, capsys, monkeypatch):
    from kiosk_config import load_config

    # scripts/test.sh exports one KIOSK_DATA_DIR for the whole run, and the environment wins
    # over the config file: each test gets its own kiosk (trust state, active pack).
    monkeypatch.setenv("KIOSK_DATA_DIR", str(tmp_path / "data"))

    assert main(["pack", "keygen", str(tmp_path / "keys" / "pub.key")]) == 0
    pub = (tmp_path / "keys" / "pub.key.pub").read_text().strip()
    capsys.readouterr()
    conf = tmp_path / "kiosk.toml"
    conf.write_text(
        f'[paths]\ndata_dir = "{tmp_path / "data"}"\n[packs]\ntrusted_keys = ["{pub}"]\n'
        f'usb_mount = "{tmp_path / "stick"}"\n'
    )
    cfg = load_config(str(conf))
    kit = PackKit(
        tmp_path / "pub",
        FakeEmbedder(cfg_dim(cfg)),
        key=load_private_key(tmp_path / "keys" / "pub.key"),
    )
    kit.binding = binding_for_config(cfg)  # packs bound to the configured embedder's manifest
    return conf, kit


def cfg_dim(cfg) -> int:
    return binding_for_config(cfg).dim


def run(conf, *args) -> int:
    return main(["--config", str(conf), *args])


def test_cli_inspect_verify_install_list_rollback_publish_sync(setup, tmp_path, capsys):
    """The sample packs carry fake vectors under the real model's binding, so the live vector
    check is off here; the next test shows it refusing them."""
    conf, kit = setup
    v1, v2 = kit.make(1, title="Hall v1"), kit.make(2, tag="b")
    assert run(conf, "pack", "inspect", str(v1)) == 0
    out = capsys.readouterr().out
    assert "demo v1" in out and "signature valid" in out and "all hashes match" in out
    assert run(conf, "pack", "inspect", "--json", str(v1)) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1

    assert run(conf, "pack", "verify", str(v1)) == 0
    assert "would be accepted" in capsys.readouterr().out
    assert run(conf, "pack", "install", "--no-vector-check", str(v1)) == 0
    assert "installed demo v1" in capsys.readouterr().out
    assert run(conf, "pack", "install", "--no-vector-check", str(v1)) == 2
    assert "already the active pack" in capsys.readouterr().err
    assert run(conf, "pack", "install", "--no-vector-check", str(v2)) == 0
    assert "(previous: v1)" in capsys.readouterr().out
    assert run(conf, "pack", "list") == 0
    out = capsys.readouterr().out
    assert (
        "current   demo v2" in out
        and "previous  demo v1" in out
        and "highest accepted version 2" in out
    )
    assert run(conf, "pack", "rollback") == 0
    assert "active: demo v1" in capsys.readouterr().out

    bad = tmp_path / "bad.kpack"
    data = bytearray(v2.read_bytes())
    data[-3] ^= 4
    bad.write_bytes(bytes(data))
    assert run(conf, "pack", "verify", str(bad)) == 2
    assert "does not match its signed sha256" in capsys.readouterr().err

    # publish a channel, then sync v3 from a USB stick (the configured usb_mount)
    root = tmp_path / "channel"
    v3 = kit.make(3, tag="c")
    assert (
        run(
            conf,
            "pack",
            "publish",
            str(v3),
            "--key",
            str(tmp_path / "keys" / "pub.key"),
            "--to",
            str(root),
        )
        == 0
    )
    assert (root / "stable" / "index.kidx").is_file() and (
        root / "packs" / "demo-v3.kpack"
    ).is_file()
    capsys.readouterr()
    (tmp_path / "stick").mkdir()
    (tmp_path / "stick" / "demo-v3.kpack").write_bytes(v3.read_bytes())
    assert run(conf, "sync", "--no-vector-check") == 0
    assert "usb: installed demo v3" in capsys.readouterr().out
    assert run(conf, "sync", "--no-vector-check") == 0
    assert "usb: up to date" in capsys.readouterr().out


def test_cli_keylist(setup, tmp_path, capsys):
    conf, kit = setup
    assert main(["pack", "keygen", str(tmp_path / "keys" / "new.key")]) == 0
    new_pub = (tmp_path / "keys" / "new.key.pub").read_text().strip()
    out = tmp_path / "keys.kkeys"
    assert (
        main(
            [
                "pack",
                "keylist",
                "--key",
                str(tmp_path / "keys" / "pub.key"),
                "--version",
                "1",
                "--out",
                str(out),
                new_pub,
            ]
        )
        == 0
    )
    from runtime.packs.signing import read_key_list

    assert read_key_list(out.read_bytes(), {bytes(kit.key.verify_key)})["keys"] == [new_pub]


@pytest.mark.real_models
def test_cli_install_refuses_vectors_from_another_model(setup, capsys):
    """By default `kiosk pack install` and `kiosk sync` embed the pack's smoke questions with
    the kiosk's own embedder: a signed pack whose binding names the kiosk's model but whose
    vectors came from elsewhere is refused and nothing is installed."""
    conf, kit = setup
    v1 = kit.make(1)
    assert run(conf, "pack", "install", str(v1)) == 2
    err = capsys.readouterr().err
    assert "not made by this kiosk's embedder" in err and "rebuild the pack" in err
    assert run(conf, "pack", "list") == 0
    assert "current   demo" not in capsys.readouterr().out
