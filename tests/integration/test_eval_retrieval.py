"""`kiosk eval retrieval` end to end on the real public data (skips without the data folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.cli import cli, main


def _run(args: list[str], env: dict[str, str] | None = None) -> dict:
    result = CliRunner().invoke(
        cli, ["eval", "retrieval", *args, "--json"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_keyword_eval_on_real_faq_data(shared_data: Path) -> None:
    report = _run(
        [
            "--dataset",
            "en-bank,zh-pairs",
            "--mode",
            "keyword",
            "--fts-scheme",
            "jieba,trigram",
            "--limit",
            "60",
            "--data-dir",
            str(shared_data),
        ]
    )
    rows = {(r["dataset"], r["fts_scheme"]): r for r in report["results"]}
    assert set(rows) == {
        ("en-bank", "jieba"),
        ("en-bank", "trigram"),
        ("zh-pairs", "jieba"),
        ("zh-pairs", "trigram"),
    }
    for r in rows.values():
        assert r["queries"] == 60 and r["mode"] == "keyword"
        assert 0.0 <= r["recall@1"] <= r["recall@5"] <= r["recall@10"] <= 1.0
        assert r["recall@1"] <= r["mrr"] <= r["recall@10"]
    # Bank answers share many words with their questions: BM25 finds a good share of them
    # (about 0.6 recall@5 on the full set, measured); a broken tokenizer or query finds ~0.
    assert rows[("en-bank", "jieba")]["recall@5"] >= 0.3
    # Chinese paraphrases: word segmentation must find some of them too.
    assert rows[("zh-pairs", "jieba")]["recall@5"] >= 0.1
    assert "zh-pairs" in report["datasets"] and report["embedder"] == "none (keyword only)"


def test_missing_data_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code = main(["eval", "retrieval", "--data-dir", str(tmp_path / "absent"), "--mode", "keyword"])
    assert code == 2
    err = capsys.readouterr().err
    assert "absent" in err and "KIOSK_SHARED_DATA" in err


def test_bad_option_values_are_refused(shared_data: Path) -> None:
    result = CliRunner().invoke(
        cli, ["eval", "retrieval", "--dataset", "nope", "--data-dir", str(shared_data)]
    )
    assert result.exit_code != 0 and "unknown dataset" in result.output


@pytest.mark.real_models
def test_hybrid_eval_with_the_default_embedder(shared_data: Path, model_cache: Path) -> None:
    from conftest import require_prepared

    require_prepared(model_cache, "use-multilingual-v3", "onnx-int8")
    report = _run(
        [
            "--dataset",
            "en-bank",
            "--limit",
            "80",
            "--fts-scheme",
            "jieba",
            "--embedder",
            "default",
            "--data-dir",
            str(shared_data),
        ],
        env={"KIOSK_MODEL_CACHE": str(model_cache)},
    )
    rows = {r["mode"]: r for r in report["results"]}
    assert set(rows) == {"keyword", "vector", "hybrid"}
    assert report["embedder"].startswith("use-multilingual-v3")
    # The real embedder puts the right answer in the top 5 for a good share of questions.
    assert rows["vector"]["recall@5"] >= 0.25
    assert rows["hybrid"]["recall@5"] >= 0.3
