"""The whole repository stays clean under ruff (rules and line length in pyproject.toml).

A unit test rather than a separate CI step so that `scripts/test.sh` catches a long line or an
unsorted import the moment it lands, not at review. ruff comes with the `dev` extra.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_check_passes_on_the_whole_repository():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]' installs it)")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"ruff check failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
