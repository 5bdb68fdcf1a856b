"""Keys on disk, signatures, trust state and key rotation."""

from __future__ import annotations

import os
import stat

import pytest
from fakes import FakeEmbedder

from runtime.errors import PackKeyError, PackSignatureError
from runtime.packs.install import PackInstaller
from runtime.packs.sample import PackKit
from runtime.packs.signing import (
    generate_key,
    load_private_key,
    make_key_list,
    parse_public_key,
    public_key_text,
    read_key_list,
    save_keypair,
)
from runtime.packs.trust import TRUST_FILE, TrustState


def test_keygen_writes_private_key_0600_and_never_overwrites(tmp_path):
    key = generate_key()
    pub = save_keypair(tmp_path / "k", key)
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert pub.read_text().strip() == public_key_text(key)
    assert bytes(load_private_key(tmp_path / "k")) == bytes(key)
    with pytest.raises(PackKeyError, match="already exists"):
        save_keypair(tmp_path / "k", generate_key())


def test_private_key_readable_by_others_is_refused(tmp_path):
    save_keypair(tmp_path / "k", generate_key())
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(PackKeyError, match="chmod 600"):
        load_private_key(tmp_path / "k")


@pytest.mark.parametrize("text", ["ed25519:abcd", "nothex", "ed25519:" + "0" * 62, ""])
def test_bad_public_keys_refused(text):
    with pytest.raises(PackKeyError):
        parse_public_key(text)


def test_public_key_forms():
    key = generate_key()
    raw = bytes(key.verify_key)
    assert parse_public_key(public_key_text(key)) == raw == parse_public_key(raw.hex())


def test_trust_state_round_trip_and_clock_policy(tmp_path):
    t = TrustState()
    assert t.highest("p") == (0, "")
    t.accept_pack("p", 4, "a" * 64, created=2_000_000_000)
    t.save(tmp_path)
    t2 = TrustState.load(tmp_path)
    assert t2.highest("p") == (4, "a" * 64)
    # the system clock set back a year cannot move "now" before the newest trusted time
    assert t2.now(clock=2_000_000_000 - 365 * 86400) == 2_000_000_000
    assert t2.now(clock=2_100_000_000) == 2_100_000_000
    (tmp_path / TRUST_FILE).write_text("{broken")
    with pytest.raises(Exception, match="unreadable"):
        TrustState.load(tmp_path)


def test_key_list_must_be_signed_by_a_trusted_key():
    old, new, stranger = generate_key(), generate_key(), generate_key()
    data = make_key_list(stranger, [public_key_text(new)], 1)
    with pytest.raises(PackSignatureError, match="not trusted"):
        read_key_list(data, {bytes(old.verify_key)})
    good = make_key_list(old, [public_key_text(new)], 1)
    assert read_key_list(good, {bytes(old.verify_key)})["keys"] == [public_key_text(new)]
    flipped = bytearray(good)
    flipped[20] ^= 1
    with pytest.raises(Exception):  # noqa: B017 - any PackError; checked precisely in the tamper corpus
        read_key_list(bytes(flipped), {bytes(old.verify_key)})


def test_key_rotation_end_to_end(tmp_path):
    """Old key signs a list naming only the new key: afterwards packs by the old key are refused."""
    emb = FakeEmbedder(32)
    old_kit = PackKit(tmp_path / "old", emb)
    new_kit = PackKit(tmp_path / "new", emb)
    packs = tmp_path / "packs"
    inst = PackInstaller(packs, old_kit.settings())
    inst.install_file(old_kit.make(1))
    with pytest.raises(PackSignatureError, match="not trusted"):
        inst.verify_file(new_kit.make(2))

    trust = TrustState.load(packs)
    rotation = make_key_list(old_kit.key, [new_kit.public_key], 1)
    assert trust.apply_key_list(rotation, [old_kit.public_key]) is True
    trust.save(packs)
    inst.install_file(new_kit.make(2))
    with pytest.raises(PackSignatureError, match="not trusted"):
        inst.install_file(old_kit.make(3, name="old-v3.kpack"))

    # the old key signs nothing any more
    with pytest.raises(PackSignatureError, match="not trusted"):
        inst.install_file(old_kit.make(4, name="old-v4.kpack"))
    trust = TrustState.load(packs)
    with pytest.raises(PackSignatureError, match="not trusted"):
        trust.apply_key_list(
            make_key_list(old_kit.key, [old_kit.public_key], 2), [old_kit.public_key]
        )
    # a list that is not newer (the retiring list still on a stick, or a replay) changes nothing
    assert trust.apply_key_list(rotation, [old_kit.public_key]) is False
    other = generate_key()
    assert (
        trust.apply_key_list(
            make_key_list(other, [public_key_text(other)], 1), [old_kit.public_key]
        )
        is False
    )
    assert trust.keyring == {"version": 1, "keys": [new_kit.public_key]}
    # the next rotation must be signed by the key trusted now
    with pytest.raises(PackSignatureError, match="not trusted"):
        trust.apply_key_list(
            make_key_list(other, [public_key_text(other)], 2), [old_kit.public_key]
        )
    assert (
        trust.apply_key_list(
            make_key_list(new_kit.key, [public_key_text(other), new_kit.public_key], 2),
            [old_kit.public_key],
        )
        is True
    )
    assert len(trust.keyring["keys"]) == 2
