"""`kiosk ingest` and `kiosk search` end to end: real config, store and CLI, a fake embedder.

The embedder is the only stand-in (``load_embedder`` is patched to return the
hashed n-gram FakeEmbedder); a real-model variant runs the same flow with the
configured embedder when its model is prepared.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fakes import FakeEmbedder  # noqa: E402

from runtime.cli import cli  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data" / "ingest"


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> dict[str, str]:
    import runtime.inference.loader as loader

    monkeypatch.setattr(loader, "load_embedder", lambda cfg, caps=None: FakeEmbedder(dim=96))
    return {"KIOSK_DATA_DIR": str(tmp_path / "data")}


def run(args: list[str], env: dict[str, str]):
    # Test-harness variables are not config keys; keep them away from the kiosk's config loader.
    env = {"KIOSK_REQUIRE_MODELS": None, "KIOSK_SHARED_DATA": None, **env}
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def test_ingest_shared_data_and_mixed_folder_then_search(env, tmp_path, shared_data):
    mixed = tmp_path / "mixed"
    shutil.copytree(DATA, mixed, ignore=shutil.ignore_patterns("*.py"))
    result = run(
        [
            "ingest",
            "--json",
            str(shared_data / "faq_en_bank"),
            str(shared_data / "rag_zh_rgb"),
            str(mixed),
        ],
        env,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    status = {Path(f["path"]).name: (f["status"], f["reason"]) for f in report["files"]}
    assert status["faq.csv"][0] == "added"
    assert status["zh_refine_dev.jsonl"] == ("skipped", ".jsonl is not a supported format")
    assert status["guide_zh.md"][0] == status["branch.pdf"][0] == "added"
    faq_rows = next(f for f in report["files"] if f["path"].endswith("faq.csv"))
    assert faq_rows["faq_entries"] > 500  # 849 rows, paraphrases grouped by identical answers
    db = Path(env["KIOSK_DATA_DIR"]) / "knowledge" / "dev.sqlite"
    assert report["store"]["path"] == str(db) and db.exists()

    again = run(["ingest", str(mixed)], env)
    assert again.exit_code == 0
    assert "unchanged" in again.output and "0 added" in again.output

    found = run(["search", "营业时间", "--k", "3", "--mode", "keyword", "--no-faq"], env)
    assert found.exit_code == 0, found.output
    first = found.output.splitlines()[0]
    assert first.startswith("1. 营业指南 > 营业时间")
    assert "guide_zh.md chars" in found.output

    hits = json.loads(
        run(["search", "How do I reset my PIN?", "--json", "--lang", "en"], env).stdout
    )
    assert hits["faq"][0]["method"] == "exact" and "PIN machine" in hits["faq"][0]["answer"]
    assert 1 <= len(hits["hits"]) <= 5
    for h in hits["hits"]:
        c = h["citation"]
        assert c["label"].startswith(c["document_title"]) and c["char_end"] > c["char_start"]
        assert h["score"] > 0
    pdf = json.loads(
        run(["search", "lost cards reported by phone", "--json", "--mode", "keyword"], env).stdout
    )
    top = pdf["hits"][0]["citation"]
    assert (
        top["source_path"].endswith("branch.pdf")
        and top["page"] == 2
        and top["section"] == "Lost cards"
    )


def test_ingest_exits_nonzero_only_when_everything_failed(env, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.pdf").write_bytes(b"not a pdf")
    (bad / "y.md").write_bytes(b"\x00\x01\x02" * 100)
    result = run(["ingest", str(bad)], env)
    assert result.exit_code == 1
    assert "skipped" in result.output and "binary data" in result.output
    shutil.copy(DATA / "notice.txt", bad)
    assert run(["ingest", str(bad)], env).exit_code == 0


def test_search_without_a_store_says_what_to_do(env):
    from runtime.errors import KnowledgeError

    with pytest.raises(KnowledgeError, match="kiosk ingest"):
        run(["search", "hello"], env)


@pytest.mark.real_models
def test_real_embedder_ingest_and_cross_lingual_search(tmp_path):
    """The configured embedder (USE multilingual) end to end: zh question finds the en passage."""
    import os

    from conftest import require_prepared

    from kiosk_config import load_config

    cache_env = (
        {"KIOSK_MODEL_CACHE": os.environ["KIOSK_MODEL_CACHE"]}
        if os.environ.get("KIOSK_MODEL_CACHE")
        else {}
    )
    model_cache = load_config(environ=cache_env).paths.model_cache
    require_prepared(model_cache, "use-multilingual-v3", "onnx-int8")
    env = {"KIOSK_DATA_DIR": str(tmp_path / "data"), "KIOSK_MODEL_CACHE": str(model_cache)}
    mixed = tmp_path / "mixed"
    shutil.copytree(DATA, mixed, ignore=shutil.ignore_patterns("*.py"))
    result = run(["ingest", "--json", str(mixed)], env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["store"]["embedding_model"] == "use-multilingual-v3"
    assert report["totals"]["added"] == 7

    def search(query: str) -> dict:
        found = run(["search", query, "--json", "--k", "3"], env)
        assert found.exit_code == 0, found.output
        return json.loads(found.stdout)

    saturday = search("When does the branch open on Saturday?")
    assert any(h["citation"]["section"] == "Opening hours" for h in saturday["hits"][:2])
    parking = search("停车怎么收费")  # Chinese question, the passage is English
    assert any(h["citation"]["document_title"] == "Parking Notice" for h in parking["hits"])
    assert parking["faq"][0]["matched_question"] == "Where can I park?"
