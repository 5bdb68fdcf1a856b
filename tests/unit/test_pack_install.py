"""Install, refusal policy, rollback, the ACTIVE pointer and the serving side's switch-over."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest
from fakes import FakeEmbedder

from runtime.errors import (
    PackCompatibilityError,
    PackExpiredError,
    PackFormatError,
    PackInstallError,
    PackSignatureError,
    PackVersionError,
)
from runtime.packs.active import ActiveKnowledge
from runtime.packs.install import PackInstaller, read_pointer
from runtime.packs.sample import PackKit
from runtime.packs.signing import generate_key

DAY = 86400


@pytest.fixture
def kit(tmp_path):
    return PackKit(tmp_path / "pub", FakeEmbedder(32))


@pytest.fixture
def inst(tmp_path, kit):
    return PackInstaller(tmp_path / "packs", kit.settings())


def snapshot(packs):
    """Bytes of everything a refused install must not change."""
    out = {}
    for name in ("ACTIVE", "trust.json"):
        p = packs / name
        out[name] = p.read_bytes() if p.exists() else None
    ptr = read_pointer(packs)
    if ptr["current"]:
        out["db"] = hashlib.sha256((packs / ptr["current"]["db"]).read_bytes()).hexdigest()
    return out


_EMB = FakeEmbedder(32)


def ask(store, text, emb=_EMB):
    return [h.citation for h in store.search(text, emb.embed(text), k=3)]


def test_install_builds_a_store_that_answers(inst, kit, tmp_path):
    r = inst.install_file(kit.make(1, n_docs=8, chunks_per_doc=3))
    assert (r.version, r.documents, r.chunks, r.smoke_passed) == (1, 8, 24, 4)
    ptr = read_pointer(tmp_path / "packs")
    assert ptr["current"]["version"] == 1 and ptr["previous"] is None
    active = ActiveKnowledge(tmp_path / "packs")
    with active.acquire() as store:
        top = ask(store, "payment3 counter 3")[0]
    assert top.source_path == "docs/payment-00003.md"
    assert (top.pack_id, top.pack_version) == ("demo", 1)
    active.close()


def test_staging_is_private_and_emptied(inst, kit, tmp_path):
    inst.install_file(kit.make(1))
    staging = tmp_path / "packs" / "staging"
    assert oct(os.stat(staging).st_mode & 0o777) == "0o700"
    assert list(staging.iterdir()) == []


def test_version_policy(inst, kit, tmp_path):
    packs = tmp_path / "packs"
    v2 = kit.make(2)
    inst.install_file(v2)
    before = snapshot(packs)
    with pytest.raises(PackVersionError, match="already the active"):
        inst.install_file(v2)  # the same file again: nothing to do
    with pytest.raises(PackVersionError, match="other content"):
        inst.install_file(kit.make(2, tag="other", name="v2-other.kpack"))
    with pytest.raises(PackVersionError, match="not above"):
        inst.install_file(kit.make(1))
    assert snapshot(packs) == before
    assert inst.install_file(kit.make(3)).version == 3


def test_clock_policy_expired_future_and_clock_set_back(tmp_path, kit):
    now = time.time()
    clock = {"t": now}
    inst = PackInstaller(tmp_path / "packs", kit.settings(clock=lambda: clock["t"]))
    with pytest.raises(PackExpiredError, match="expired"):
        inst.install_file(
            kit.make(1, created=int(now - 10 * DAY), expires=int(now - DAY), name="old.kpack")
        )
    with pytest.raises(PackExpiredError, match="future"):
        inst.install_file(
            kit.make(1, created=int(now + DAY), expires=int(now + 9 * DAY), name="future.kpack")
        )
    inst.install_file(kit.make(1, created=int(now), expires=int(now + 2 * DAY)))
    # the clock is set back a year: a pack that expired before the newest trusted time stays refused
    clock["t"] = now - 365 * DAY
    with pytest.raises(PackExpiredError, match="expired"):
        inst.install_file(
            kit.make(2, created=int(now - 400 * DAY), expires=int(now - DAY), name="v2.kpack")
        )
    # the active pack expires: it keeps serving, flagged stale
    clock["t"] = now + 3 * DAY
    st = inst.status()
    assert st["current"]["version"] == 1 and st["stale"] is True


def test_compatibility_checks(tmp_path, kit):
    other = PackKit(tmp_path / "other", FakeEmbedder(32, model_id="another-model"), key=kit.key)
    inst = PackInstaller(tmp_path / "packs", kit.settings())
    with pytest.raises(PackCompatibilityError, match="embedded with another-model"):
        inst.install_file(other.make(1))
    wrong_dim = PackKit(tmp_path / "dim", FakeEmbedder(16), key=kit.key)
    with pytest.raises(PackCompatibilityError, match="16-d"):
        inst.install_file(wrong_dim.make(1))
    with pytest.raises(PackCompatibilityError, match="locales"):
        inst.install_file(kit.make(1, locales=["zh"], name="zh.kpack"))
    with pytest.raises(PackCompatibilityError, match="runtime 9.0.0"):
        inst.install_file(kit.make(1, min_runtime="9.0.0", name="new.kpack"))
    assert not (tmp_path / "packs" / "ACTIVE").exists()


def test_untrusted_and_wrong_key(tmp_path, kit):
    stranger = PackKit(tmp_path / "s", FakeEmbedder(32), key=generate_key())
    inst = PackInstaller(tmp_path / "packs", kit.settings())
    with pytest.raises(PackSignatureError, match="not trusted"):
        inst.install_file(stranger.make(1))
    inst_none = PackInstaller(tmp_path / "packs2", kit.settings(configured_keys=[]))
    with pytest.raises(PackSignatureError, match="no trusted keys"):
        inst_none.install_file(kit.make(1))


def test_byte_cap(tmp_path, kit):
    path = kit.make(1)
    inst = PackInstaller(tmp_path / "packs", kit.settings(max_bytes=path.stat().st_size - 1))
    with pytest.raises(Exception, match="over the cap"):
        inst.install_file(path)


def test_signed_hostile_content_refused_before_switch(inst, kit, tmp_path):
    """Signed by the trusted key but malformed inside: refused, nothing switched."""
    packs = tmp_path / "packs"
    inst.install_file(kit.make(1))
    before = snapshot(packs)
    from runtime.packs.sample import sample_records

    recs = sample_records(2, 2)
    bad = [
        (
            recs[0][0].__class__(**{**recs[0][0].__dict__, "source_path": "../../etc/passwd"}),
            recs[0][1],
        ),
        recs[1],
    ]
    import runtime.packs.sample as S

    orig = S.sample_records
    S.sample_records = lambda *a, **k: bad
    try:
        with pytest.raises(PackFormatError, match=r"'\.\.'"):
            inst.install_file(kit.make(2, name="evil.kpack"))
    finally:
        S.sample_records = orig
    assert snapshot(packs) == before


def test_failing_smoke_questions_refuse_the_pack(inst, kit, tmp_path):
    import numpy as np

    path = kit.work / "nosmoke.kpack"
    from runtime.knowledge.store import KnowledgeStore
    from runtime.packs.build import export_pack
    from runtime.packs.sample import fill_store, sample_records

    with KnowledgeStore.open(
        kit.work / "s.sqlite", embedding_model="fake-ngram-embedder", dim=32
    ) as store:
        fill_store(store, kit.embedder, sample_records(3, 2))
        q = "zebra crossing under the moon"
        export_pack(
            store,
            path,
            pack_id="demo",
            version=1,
            sign=kit.sign,
            binding=kit.binding,
            smoke=[{"question": q, "expected_source": "docs/not-there.md"}],
            smoke_vectors=np.stack([kit.embedder.embed(q)]),
            locales=["en"],
        )
    with pytest.raises(PackInstallError, match="smoke questions did not find"):
        inst.install_file(path)
    assert not (tmp_path / "packs" / "ACTIVE").exists()
    assert list((tmp_path / "packs" / "stores").iterdir()) == []


def test_rollback_and_keep_only_two(inst, kit, tmp_path):
    packs = tmp_path / "packs"
    with pytest.raises(PackInstallError, match="no previous"):
        inst.rollback()
    for v in (1, 2, 3):
        inst.install_file(kit.make(v, tag=f"v{v}"))
    stores = sorted(p.name for p in (packs / "stores").iterdir() if p.suffix == ".sqlite")
    assert len(stores) == 2 and stores[0].startswith("demo-v2") and stores[1].startswith("demo-v3")
    assert len(list((packs / "archive").iterdir())) == 2
    trust_before = (packs / "trust.json").read_bytes()
    back = inst.rollback()
    assert back["version"] == 2 and read_pointer(packs)["previous"]["version"] == 3
    assert (packs / "trust.json").read_bytes() == trust_before  # rolling back does not lower trust
    with pytest.raises(PackVersionError):
        inst.install_file(kit.make(2, tag="v2"))  # roll forward only
    active = ActiveKnowledge(packs)
    with active.acquire() as store:
        assert ask(store, "payment3v2 counter 3")[0].source_path == "docs/payment-00003.md"
    active.close()


def test_queries_in_flight_finish_on_the_old_store(inst, kit, tmp_path):
    packs = tmp_path / "packs"
    inst.install_file(kit.make(1, tag="one"))
    active = ActiveKnowledge(packs)
    holding = threading.Event()
    release = threading.Event()
    seen = {}

    def slow_query():
        with active.acquire() as store:
            holding.set()
            release.wait(10)
            seen["old"] = store.search("permit0one", None, k=1, mode="keyword")[
                0
            ].citation.pack_version

    t = threading.Thread(target=slow_query)
    t.start()
    holding.wait(10)
    inst.install_file(kit.make(2, tag="two"))
    with active.acquire() as store:  # the next query sees the new pack at once
        assert store.search("permit0two", None, k=1, mode="keyword")[0].citation.pack_version == 2
    release.set()
    t.join(10)
    assert seen["old"] == 1  # the query that started before the switch finished on v1
    active.close()


def test_boot_falls_back_to_previous_then_to_nothing(inst, kit, tmp_path):
    packs = tmp_path / "packs"
    inst.install_file(kit.make(1))
    inst.install_file(kit.make(2, tag="b"))
    ptr = read_pointer(packs)
    db = packs / ptr["current"]["db"]
    db.write_bytes(b"garbage" * 1000)  # the current database is corrupted
    active = ActiveKnowledge(packs)
    with active.acquire() as store:
        assert store is not None
        assert store.search("permit0", None, k=1, mode="keyword")[0].citation.pack_version == 1
    d = active.describe()
    assert d["using"] == "previous" and "current pack demo v2" in d["problem"]
    active.close()
    (packs / ptr["previous"]["db"]).unlink()
    active = ActiveKnowledge(packs)
    with active.acquire() as store:
        assert store is None  # the answer pipeline falls back to the static FAQ
    assert active.describe()["using"] == "none"


def test_leftovers_of_a_crashed_install_are_cleaned(inst, kit, tmp_path):
    packs = tmp_path / "packs"
    inst.install_file(kit.make(1))
    (packs / "staging" / "s-dead").mkdir()
    (packs / "staging" / "s-dead" / "store.sqlite").write_bytes(b"x")
    (packs / "stores" / "demo-v9-dead.sqlite").write_bytes(b"x")
    inst.install_file(kit.make(2))
    assert not (packs / "staging" / "s-dead").exists()
    assert not (packs / "stores" / "demo-v9-dead.sqlite").exists()


def test_second_installer_is_refused_while_one_runs(inst, kit, tmp_path):
    import fcntl

    fd = os.open(tmp_path / "packs" / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(PackInstallError, match="another install"):
            inst.install_file(kit.make(1))
    finally:
        os.close(fd)


def test_pointer_is_plain_json_naming_relative_files(inst, kit, tmp_path):
    inst.install_file(kit.make(1))
    obj = json.loads((tmp_path / "packs" / "ACTIVE").read_text())
    assert obj["current"]["db"].startswith("stores/") and obj["current"]["pack"].startswith(
        "archive/"
    )
