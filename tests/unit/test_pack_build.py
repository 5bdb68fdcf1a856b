"""Central side: a real source folder → ingest → signed pack → installed on a kiosk."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeEmbedder

from runtime.errors import PackFormatError
from runtime.packs.active import ActiveKnowledge
from runtime.packs.build import build_pack
from runtime.packs.install import PackInstaller
from runtime.packs.sample import PackKit

DEMO = Path(__file__).resolve().parents[2] / "kiosk_config" / "demo" / "docs"


def test_build_from_demo_docs_then_install_and_answer(tmp_path):
    kit = PackKit(tmp_path / "pub", FakeEmbedder(64))
    out = tmp_path / "hall-v1.kpack"
    stages = set()
    info = build_pack(
        DEMO,
        out,
        embedder=kit.embedder,
        binding=kit.binding,
        sign=kit.sign,
        pack_id="hall",
        version=1,
        locales=["zh", "en"],
        progress=lambda stage, done, total: stages.add(stage),
    )
    assert info["documents"] >= 11 and info["chunks"] > info["documents"] and info["smoke"] >= 1
    assert "ingest" in stages
    inst = PackInstaller(
        tmp_path / "packs", kit.settings(locales=("zh", "en"), embedder=FakeEmbedder(64))
    )
    r = inst.install_file(out)
    assert (r.pack_id, r.version, r.chunks) == ("hall", 1, info["chunks"])
    active = ActiveKnowledge(inst.dir)
    with active.acquire() as store:
        paths = {d.source_path for _, d in store.iter_documents()}
        hits = store.search("opening hours", kit.embedder.embed("opening hours"), k=5)
    active.close()
    assert "en/opening-hours.md" in paths and "zh/opening-hours.md" in paths  # relative to SOURCE
    assert all(not p.startswith("/") for p in paths)
    assert any(h.citation.source_path == "en/opening-hours.md" for h in hits)


def test_build_uses_smoke_yaml(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "fees.md").write_text(
        "# Fees\n\nA passport photo costs 25 yuan at counter 4.\n", encoding="utf-8"
    )
    (src / "hours.md").write_text(
        "# Hours\n\nThe hall opens at 9 am on Saturday.\n", encoding="utf-8"
    )
    (src / "smoke.yaml").write_text(
        "- question: passport photo costs\n  source: fees.md\n  language: en\n"
    )
    kit = PackKit(tmp_path / "pub", FakeEmbedder(64))
    info = build_pack(
        src,
        tmp_path / "p.kpack",
        embedder=kit.embedder,
        binding=kit.binding,
        sign=kit.sign,
        pack_id="tiny",
        version=1,
        locales=["en"],
    )
    assert info["smoke"] == 1 and info["documents"] == 2
    assert (
        PackInstaller(tmp_path / "packs", kit.settings())
        .install_file(tmp_path / "p.kpack")
        .smoke_passed
        == 1
    )


def test_build_refuses_empty_folder(tmp_path):
    kit = PackKit(tmp_path / "pub", FakeEmbedder(64))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackFormatError):
        build_pack(
            tmp_path / "empty",
            tmp_path / "p.kpack",
            embedder=kit.embedder,
            binding=kit.binding,
            sign=kit.sign,
            pack_id="x",
            version=1,
            locales=["en"],
        )
