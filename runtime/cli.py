"""The `kiosk` command. Sub-commands live in ``runtime/commands/`` and load lazily,
so `kiosk --help` stays fast and a missing optional backend breaks only its own command.
Logging is configured here, once, and nowhere else.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from runtime import __version__
from runtime.errors import KioskError

# name -> "module:attribute" of a click command or group, in help order.
COMMANDS: dict[str, str] = {
    "serve": "runtime.commands.serve:serve",
    "demo": "runtime.commands.serve:demo",
    "ask": "runtime.commands.serve:ask",
    "doctor": "runtime.commands.doctor:doctor",
    "models": "runtime.commands.models:models",
    "ingest": "runtime.commands.knowledge:ingest",
    "search": "runtime.commands.knowledge:search",
    "eval": "runtime.commands.evaluate:eval_group",
    "pack": "runtime.commands.packs:pack",
    "sync": "runtime.commands.packs:sync",
    "transcribe": "runtime.commands.speech:transcribe",
    "speak": "runtime.commands.speech:speak",
    "audit": "runtime.commands.audit:audit",
}

_HELP = {
    "serve": "Run the kiosk HTTP service (and UI) on loopback.",
    "demo": "Answer typed questions from the bundled demo knowledge in the terminal.",
    "ask": "Answer one question and print the answer with its sources.",
    "doctor": "Show what this box has: CPU, devices, backends, models and their placement.",
    "models": "List, prepare and verify models in the model cache.",
    "ingest": "Add documents and FAQ tables to the knowledge store.",
    "search": "Search the knowledge store and print ranked hits with citations.",
    "eval": "Measure retrieval and answer quality on question sets.",
    "pack": "Build, sign, inspect, verify, install and roll back knowledge packs.",
    "sync": "Fetch and install the newest knowledge pack from the channel or USB.",
    "transcribe": "Transcribe an audio file.",
    "speak": "Speak a text to a WAV file or the speaker.",
    "audit": "Export or purge the redacted audit log of answered turns.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, target in COMMANDS.items() if _module_exists(target)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None or not _module_exists(target):
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help without importing every command module.
        rows = [(n, _HELP.get(n, "")) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _module_exists(target: str) -> bool:
    module = target.split(":")[0]
    return importlib.util.find_spec(module) is not None


def setup_logging(level: str, json_lines: bool) -> None:
    fmt = (
        '{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","message":%(message)r}'
        if json_lines
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.basicConfig(level=getattr(logging, level), format=fmt, stream=sys.stderr, force=True)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kiosk")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="KIOSK_CONFIG",
    help="Config file (TOML). Default: the bundled kiosk_config/kiosk.toml. Env: KIOSK_CONFIG.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """kiosk-assistant: offline answers for touch-screen kiosks, in Chinese and English.

    Every answer comes from the installed knowledge with its source shown, or is an
    honest "please ask the staff". Run `kiosk COMMAND --help` for each command.
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["verbose"] = verbose
    setup_logging("DEBUG" if verbose else "WARNING", json_lines=False)


def get_config(ctx: click.Context):  # -> KioskConfig (imported lazily: keeps --help fast)
    """The validated config for this invocation (loaded once, cached on the context)."""
    from kiosk_config import load_config

    root = ctx.find_root()
    root.ensure_object(dict)
    if "config" not in root.obj:
        root.obj["config"] = load_config(root.obj.get("config_path"))
        cfg = root.obj["config"]
        if not root.obj.get("verbose"):
            setup_logging(
                cfg.logging.level if cfg.logging.level != "INFO" else "WARNING",
                cfg.logging.json_lines,
            )
    return root.obj["config"]


def main(argv: list[str] | None = None) -> int:
    try:
        rc = cli.main(args=argv, prog_name="kiosk", standalone_mode=False)
    except KioskError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
