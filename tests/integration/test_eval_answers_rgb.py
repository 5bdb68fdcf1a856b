"""`kiosk eval answers --benchmark zh-rgb`: the answer pipeline on real Chinese news questions
and passages nobody here wrote (skips without the shared data folder)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from runtime.cli import cli, main


def test_rgb_benchmark_scores_answers_and_refusals(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "rgb.json"
    args = ["eval", "answers", "--benchmark", "zh-rgb", "--data-dir", str(shared_data)]
    args += ["--generator", "none", "--limit", "40", "--out", str(out)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["knowledge"].startswith("RGB zh passages")
    (v,) = report["variants"]
    assert v["answerable"] == 20  # the even rows of the first 40
    uncovered = v["questions"] - v["answerable"]
    assert 0 < uncovered <= 20  # odd rows whose answer no other passage holds
    assert v["by_language"].keys() == {"zh"}
    # Retrieval finds the answer passage and the quote holds the answer for most answerable
    # rows (73 of 100 on the full set, measured); a broken search or quote gets few.
    assert v["correct"] >= 10, v
    # Every uncovered question is answered or refused, and scored as such.
    assert v["by_type"]["uncovered"]["questions"] == uncovered


def test_rgb_benchmark_without_the_data_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code = main(
        ["eval", "answers", "--benchmark", "zh-rgb", "--data-dir", str(tmp_path / "absent")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "absent" in err and "KIOSK_SHARED_DATA" in err
