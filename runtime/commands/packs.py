"""`kiosk pack ...` (central side: keygen, keylist, build, inspect, publish; kiosk side: verify,
install, list, rollback) and `kiosk sync`. See docs/packs.md."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from runtime.cli import get_config


def _progress_bar():
    """A rich progress bar driven by (stage, done, total) callbacks."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        DownloadColumn(binary_units=False),
        TimeElapsedColumn(),
        transient=True,
    )
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total or None)
        bar.update(tasks[stage], completed=done, total=total or None)

    return bar, report


def _installer(ctx: click.Context, *, vector_check: bool = False):
    """The kiosk's installer; with ``vector_check`` it also embeds each pack's smoke
    questions with this kiosk's own embedder and refuses vectors from another model."""
    from runtime.packs.binding import binding_for_config
    from runtime.packs.install import PackInstaller, packs_dir_for, settings_from_config

    cfg = get_config(ctx)
    settings = settings_from_config(cfg, binding_for_config(cfg))
    if vector_check:
        from runtime.errors import KioskError
        from runtime.inference.loader import load_embedder

        try:
            settings.embedder = load_embedder(cfg)
        except KioskError as exc:
            click.secho(
                f"note: vector check skipped ({exc.message}); run `kiosk models prepare` "
                "to check that the pack's vectors come from this kiosk's embedder",
                fg="yellow",
                err=True,
            )
    return cfg, PackInstaller(packs_dir_for(cfg), settings)


_VECTOR_CHECK = click.option(
    "--vector-check/--no-vector-check",
    default=True,
    show_default=True,
    help="Embed the pack's smoke questions with this kiosk's embedder and refuse vectors "
    "from another model (needs the prepared embedder).",
)


@click.group()
def pack() -> None:
    """Build, sign, inspect, verify, install and roll back knowledge packs."""


# --- central side -------------------------------------------------------------------------


@pack.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keygen(path: Path) -> None:
    """Create an ed25519 signing key at PATH (mode 0600) and PATH.pub; print the public key."""
    from runtime.packs.signing import generate_key, public_key_text, save_keypair

    key = generate_key()
    pub = save_keypair(path, key)
    click.echo(f"private key: {path} (keep it off the kiosks)\npublic key:  {pub}")
    click.echo(f"add to the kiosks' [packs] trusted_keys:\n  {public_key_text(key)}")


@pack.command()
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A key the kiosks trust now (signs the new list).",
)
@click.option(
    "--version", "version", required=True, type=int, help="Above the last key list published."
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.argument("public_keys", nargs=-1, required=True)
def keylist(key_path: Path, version: int, out: Path, public_keys: tuple[str, ...]) -> None:
    """Sign a new trusted-key list (key rotation) with a key the kiosks trust now."""
    from runtime.packs.signing import load_private_key, make_key_list

    out.write_bytes(make_key_list(load_private_key(key_path), list(public_keys), version))
    click.echo(
        f"wrote {out}: version {version}, {len(public_keys)} keys; publish it with `kiosk pack publish --key-list`"  # noqa: E501
    )


@pack.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--pack-id", required=True, help="Stable id of this content line, e.g. riverside-hall."
)
@click.option(
    "--version", "version", required=True, type=int, help="Strictly above every version published."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Default: <pack-id>-v<version>.kpack",
)
@click.option("--expires-days", default=90.0, show_default=True, type=float)
@click.option("--title", default="")
@click.option("--locale", "locales", multiple=True, help="Default: [kiosk] languages.")
@click.pass_context
def build(
    ctx: click.Context,
    source: Path,
    key_path: Path,
    pack_id: str,
    version: int,
    out: Path | None,
    expires_days: float,
    title: str,
    locales: tuple[str, ...],
) -> None:
    """Ingest SOURCE (chunk + embed with the configured embedder) and write a signed pack."""
    from runtime.inference.loader import load_embedder
    from runtime.packs.binding import binding_for_config
    from runtime.packs.build import build_pack
    from runtime.packs.signing import load_private_key, signer

    cfg = get_config(ctx)
    key = load_private_key(key_path)
    binding = binding_for_config(cfg)
    embedder = load_embedder(cfg)
    out = out or Path(f"{pack_id}-v{version}.kpack")
    bar, report = _progress_bar()
    t0 = time.perf_counter()
    with bar:
        info = build_pack(
            source,
            out,
            embedder=embedder,
            binding=binding,
            sign=signer(key),
            pack_id=pack_id,
            version=version,
            locales=list(locales or cfg.kiosk.languages),
            expires_days=expires_days,
            title=title,
            progress=report,
        )
    click.echo(
        f"wrote {out}: {info['documents']} documents, {info['chunks']} chunks, {info['faq_entries']} FAQ entries, "  # noqa: E501
        f"{info['smoke']} smoke questions, {out.stat().st_size} bytes in {time.perf_counter() - t0:.1f} s"  # noqa: E501
    )


@pack.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def inspect(path: Path, as_json: bool) -> None:
    """Show a pack's manifest, signer and sections, and check its section hashes (no trust needed)."""  # noqa: E501
    from runtime.packs.format import PackFile, manifest_from_bytes
    from runtime.packs.signing import public_key_text, verify_envelope

    with PackFile(path) as pf:
        verify_envelope(pf.envelope, {pf.envelope.public_key}, what=f"pack {path.name}")
        m = manifest_from_bytes(pf.envelope.body)
        pf.bind_manifest(m)
        for _ in pf.iter_section_hashes():
            pass
        signer = public_key_text(pf.envelope.public_key)
    info = m.model_dump()
    info["signed_by"] = signer
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    click.echo(
        f"{m.pack_id} v{m.version}  {m.title}\n  signed by  {signer} (signature valid; trust not checked)"  # noqa: E501
    )
    click.echo(
        f"  created    {time.strftime('%Y-%m-%d %H:%M', time.gmtime(m.created))} UTC, "
        f"expires {time.strftime('%Y-%m-%d %H:%M', time.gmtime(m.expires))} UTC"
    )
    click.echo(f"  locales    {', '.join(m.compat.locales)}; runtime >= {m.compat.min_runtime}")
    click.echo(
        f"  embedding  {m.embedding.model_id} ({m.embedding.dim}-d, {m.embedding.hash[:16]}…)"
    )
    c = m.counts
    click.echo(
        f"  content    {c.documents} documents, {c.chunks} chunks, {c.faq_entries} FAQ entries, {c.smoke} smoke"  # noqa: E501
    )
    click.echo(f"  sections   {len(m.sections)}, {m.body_length} bytes, all hashes match")


@pack.command()
@click.argument("pack_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Signs the channel index.",
)
@click.option(
    "--to",
    "root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The channel folder a static web server serves.",
)
@click.option("--channel", default="stable", show_default=True)
@click.option(
    "--expires-days",
    default=30.0,
    show_default=True,
    type=float,
    help="Index expiry (republish before).",
)
@click.option(
    "--key-list",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A rotated key list (from `kiosk pack keylist`) to hand to the kiosks.",
)
def publish(
    pack_path: Path,
    key_path: Path,
    root: Path,
    channel: str,
    expires_days: float,
    key_list: Path | None,
) -> None:
    """Copy PACK into a static channel folder and sign the channel's index."""
    from runtime.packs.channel import index_path
    from runtime.packs.channel import publish as do_publish
    from runtime.packs.signing import load_private_key, signer

    body = do_publish(
        pack_path,
        root,
        channel,
        signer(load_private_key(key_path)),
        expires_days=expires_days,
        key_list=key_list,
    )
    p = body["pack"]
    click.echo(
        f"published {p['pack_id']} v{p['version']} to {root / index_path(channel)} ({p['length']} bytes)"  # noqa: E501
    )


# --- kiosk side ------------------------------------------------------------------------------


@pack.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def verify(ctx: click.Context, path: Path) -> None:
    """Check a pack against this kiosk (signature, hashes, version, expiry, binding) without installing."""  # noqa: E501
    _, inst = _installer(ctx)
    vp = inst.verify_file(path)
    click.echo(f"ok: {vp.manifest.pack_id} v{vp.manifest.version} would be accepted by this kiosk")


@pack.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_VECTOR_CHECK
@click.pass_context
def install(ctx: click.Context, path: Path, vector_check: bool) -> None:
    """Verify PATH, build its knowledge base, check it, and make it active (the old one is kept)."""
    _, inst = _installer(ctx, vector_check=vector_check)
    bar, report = _progress_bar()
    with bar:
        r = inst.install_file(path, report)
    prev = f" (previous: v{r.previous['version']})" if r.previous else ""
    click.echo(
        f"installed {r.pack_id} v{r.version}: {r.documents} documents, {r.chunks} chunks, "
        f"{r.faq_entries} FAQ entries; {r.smoke_passed} smoke questions passed{prev}"
    )


@pack.command(name="list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_packs(ctx: click.Context, as_json: bool) -> None:
    """Show the active and previous packs and the trust state."""
    _, inst = _installer(ctx)
    st = inst.status()
    if as_json:
        click.echo(json.dumps(st, indent=1))
        return
    for which in ("current", "previous"):
        e = st[which]
        if e:
            click.echo(
                f"{which:9} {e['pack_id']} v{e['version']}  {e['counts']['chunks']} chunks  "
                f"installed {time.strftime('%Y-%m-%d %H:%M', time.gmtime(e['installed_at']))} UTC  "
                f"expires {time.strftime('%Y-%m-%d', time.gmtime(e['expires']))}"
            )
        else:
            click.echo(f"{which:9} none")
    for pid, rec in st["trusted_versions"].items():
        click.echo(f"trusted   {pid}: highest accepted version {rec['version']}")
    if st["stale"]:
        click.secho(
            "the active pack has expired: its content may be stale; publish a new pack", fg="yellow"
        )


@pack.command()
@click.pass_context
def rollback(ctx: click.Context) -> None:
    """Make the previous pack active again (the way forward stays a higher version)."""
    _, inst = _installer(ctx)
    e = inst.rollback()
    click.echo(f"active: {e['pack_id']} v{e['version']}")


@click.command()
@click.option(
    "--usb", type=click.Path(file_okay=False, path_type=Path), help="Sync from this folder only."
)
@click.option("--url", help="Sync from this channel URL only.")
@_VECTOR_CHECK
@click.pass_context
def sync(ctx: click.Context, usb: Path | None, url: str | None, vector_check: bool) -> None:
    """Fetch and install the newest pack from the configured channel and/or USB folder, once."""
    from runtime.packs.sync import SyncService, sources_from_config

    cfg, inst = _installer(ctx, vector_check=vector_check)
    bar, report = _progress_bar()
    svc = SyncService(inst, [], progress=report)
    sources = []
    if usb or url:
        from runtime.packs.sources.http import HttpChannelSource
        from runtime.packs.sources.usb import UsbSource

        if url:
            sources.append(
                HttpChannelSource(
                    url,
                    cfg.packs.channel,
                    svc.downloads,
                    deadline_s=cfg.packs.download_deadline_s,
                    retries=cfg.packs.http_retries,
                )
            )
        if usb:
            sources.append(UsbSource(usb, cfg.packs.max_pack_bytes))
    else:
        sources = sources_from_config(cfg, svc.downloads)
    if not sources:
        raise click.UsageError(
            "no source: set [packs] channel_url or usb_mount, or pass --url / --usb"
        )
    with bar:
        result = svc.run_once("command line", sources=sources)
    for r in result["sources"]:
        if r["outcome"] == "installed":
            click.echo(f"{r['source']}: installed {r['pack_id']} v{r['version']}")
        elif r["ok"]:
            click.echo(f"{r['source']}: up to date")
        else:
            click.secho(
                f"{r['source']}: {r['error_type']}: {r['error']}\n  fix: {r['hint']}",
                fg="red",
                err=True,
            )
    if not result["ok"]:
        ctx.exit(2)
