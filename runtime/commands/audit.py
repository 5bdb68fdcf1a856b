"""`kiosk audit export|purge`: the redacted audit log of answered turns (runtime/audit.py)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from runtime.cli import get_config


def _db(ctx: click.Context, db: Path | None) -> Path:
    cfg = get_config(ctx)
    return db or cfg.audit.path or cfg.paths.data_dir / "audit" / "audit.sqlite"


def _when(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "expected an ISO date or date-time, e.g. 2026-11-01 or 2026-11-01T08:00",
            param_hint=name,
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


_db_opt = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Audit log file (default [audit] path, or <data_dir>/audit/audit.sqlite).",
)


@click.group()
def audit() -> None:
    """Export or purge the audit log of answered turns (personal data is redacted before
    writing)."""


@audit.command()
@_db_opt
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write JSON lines here (default: standard output).",
)
@click.option(
    "--since", default=None, help="Only turns at or after this ISO date/time (UTC if no zone)."
)
@click.option("--until", default=None, help="Only turns before this ISO date/time.")
@click.pass_context
def export(
    ctx: click.Context, db: Path | None, output: Path | None, since: str | None, until: str | None
) -> None:
    """Write turns as JSON lines for upload to a central system."""
    from runtime.audit import export_jsonl

    path = _db(ctx, db)
    lo, hi = _when(since, "--since"), _when(until, "--until")
    if output is None:
        n = export_jsonl(path, sys.stdout, since=lo, until=hi)
    else:
        tmp = output.with_name(output.name + ".part")
        with tmp.open("w", encoding="utf-8") as f:
            n = export_jsonl(path, f, since=lo, until=hi)
        tmp.replace(output)
    click.echo(f"exported {n} turns from {path}", err=True)


@audit.command()
@_db_opt
@click.option(
    "--older-than-days",
    type=click.FloatRange(min=0),
    default=None,
    help="Delete turns older than this (default [audit] retention_days).",
)
@click.pass_context
def purge(ctx: click.Context, db: Path | None, older_than_days: float | None) -> None:
    """Delete turns older than the retention period."""
    from runtime.audit import connect, purge_file

    cfg = get_config(ctx)
    path = _db(ctx, db)
    days = cfg.audit.retention_days if older_than_days is None else older_than_days
    if days <= 0:
        click.echo("retention is 0 (keep forever): nothing deleted", err=True)
        return
    if not path.is_file():
        from runtime.errors import AuditError

        raise AuditError(
            f"audit log {path} does not exist",
            hint="check [audit] path / [paths] data_dir; the log is created by `kiosk serve`",
        )
    conn = connect(path)
    try:
        n = purge_file(conn, days)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    click.echo(f"deleted {n} turns older than {days:g} days from {path}", err=True)
