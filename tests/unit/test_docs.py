"""Docs stay true to the commands: the config reference is generated from the schema, and the
README shows every `kiosk` command and sub-command a user can run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from runtime.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_docs.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _all_command_paths() -> list[str]:
    ctx = click.Context(cli)
    paths = []
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None, name
        paths.append(f"kiosk {name}")
        if isinstance(cmd, click.Group):
            paths += [f"kiosk {name} {sub}" for sub in cmd.list_commands(ctx)]
    return paths


def test_readme_shows_every_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [p for p in _all_command_paths() if p not in readme]
    assert not missing, f"README.md does not show: {missing}"


def test_every_registered_command_module_exists():
    ctx = click.Context(cli)
    assert sorted(cli.list_commands(ctx)) == sorted(COMMANDS), (
        "a command in runtime/cli.py has no module"
    )


def test_readme_opens_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    lines = [ln.split("#")[0].strip() for ln in first_block.strip().splitlines()]
    assert lines == ["bash scripts/setup.sh && .venv/bin/kiosk serve", "bash scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/test.sh" in ci
