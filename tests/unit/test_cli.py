"""The kiosk command: help, config errors as clear messages, doctor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runtime.cli import COMMANDS, main


def run_kiosk(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def test_help_lists_every_registered_command_that_exists(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("doctor", "models", "serve", "demo"):
        assert name in COMMANDS
        assert f"  {name} " in out


def test_bad_config_exits_2_naming_file_and_key(tmp_path):
    cfg = tmp_path / "k.toml"
    cfg.write_text("[devices]\npreference = ['TPU']\n", encoding="utf-8")
    proc = run_kiosk("--config", str(cfg), "doctor", "--no-load")
    assert proc.returncode == 2
    assert str(cfg) in proc.stderr and "devices.preference.0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_doctor_json_reports_cpu_backends_and_models(tmp_path):
    proc = run_kiosk("doctor", "--json", "--no-load", env={"KIOSK_DATA_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["cpu"]["cores"] >= 1
    assert "onnxruntime" in data["backends"]
    assert "CPUExecutionProvider" in data["onnxruntime_providers"]
    assert data["device_preference"] == ["NPU", "GPU", "CPU"]
    # every missing backend comes with a reason
    assert all(v["why"] for v in data["missing"].values())


def test_doctor_says_what_the_answer_experiment_does_with_the_generator(tmp_path):
    env = {"KIOSK_DATA_DIR": str(tmp_path)}
    proc = run_kiosk("doctor", "--json", "--no-load", env=env)
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(proc.stdout)["generator"]["answers"]
    assert answers["experiment"] == "default-v3" and answers["compose"] == "quote"
    assert answers["uses_generator"] is False and answers["pinned"] is False

    text = (
        Path(__file__).resolve().parents[2] / "kiosk_config/experiments/default.yaml"
    ).read_text(encoding="utf-8")
    exp = tmp_path / "pinned.yaml"
    exp.write_text(
        text.replace("id: default-v3", "id: pinned-test")
        .replace("compose: quote", "compose: generate")
        .replace("model: auto", "model: qwen2.5-coder-0.5b-instruct"),
        encoding="utf-8",
    )
    cfg = tmp_path / "k.toml"
    cfg.write_text(f"[answer]\nexperiment = '{exp}'\n", encoding="utf-8")
    proc = run_kiosk("--config", str(cfg), "doctor", "--no-load", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "experiment pinned-test pins qwen2.5-coder-0.5b-instruct" in " ".join(
        proc.stdout.split()
    )
