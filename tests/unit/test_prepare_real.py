"""`prepare` on the real embedding manifest, offline, into a temporary cache.

The wheel comes from the real model cache's download folder (left there by
`kiosk models prepare`) and goes through the same pip `--no-index --find-links`
path an air-gapped kiosk uses, so the test never touches the network. It checks
that the real manifest's pinned sha256 matches the bytes in the real wheel, that
every variant's recipe runs and is recorded, that `verify` passes, and that a
second run does no work.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.prepare.cache import model_downloads_dir, prepared_variant_dir, read_record
from runtime.prepare.fetch import wheels_for
from runtime.prepare.manifest import load_manifest
from runtime.prepare.prepare import prepare_models, select_targets
from runtime.prepare.verify import verify_model

pytestmark = pytest.mark.real_models

MODELS = Path(__file__).resolve().parents[2] / "models"
EMBEDDER = MODELS / "use-multilingual-v3.toml"


def test_prepare_real_embedding_manifest_offline(tmp_path: Path, model_cache: Path) -> None:
    if not EMBEDDER.exists():
        pytest.skip(f"{EMBEDDER} does not exist yet")
    manifest = load_manifest(EMBEDDER)
    wheels = model_downloads_dir(model_cache, manifest.id)
    if manifest.source.kind == "pypi":
        _, missing = wheels_for(wheels, manifest.source.packages)
        if missing:
            message = f"no downloaded wheel for {missing} in {wheels}: run kiosk models prepare"
            if os.environ.get("KIOSK_REQUIRE_MODELS") == "1":
                pytest.fail(message)
            pytest.skip(message)
    cache = tmp_path / "cache"
    # the first variant is enough to exercise the machinery and keeps the test short
    first = manifest.variants[0].name
    targets = select_targets({manifest.id: manifest}, [manifest.id], variants=[first])
    wheels_dir = wheels if manifest.source.kind == "pypi" else None
    report = prepare_models(targets, cache, manifest_dir=MODELS, wheels_dir=wheels_dir)
    assert report.errors == []
    done = [s.name for s in report.done()]
    assert done[:2] == ["fetch", "assemble"]
    assert set(targets[0].variants) <= {
        o.variant for o in report.outcomes if o.status == "prepared"
    }
    for variant in targets[0].variants:
        folder = prepared_variant_dir(cache, manifest.id, variant)
        record = read_record(cache, manifest.id, variant)
        assert record["sources"][0]["sha256"] == manifest.files[0].sha256
        assert all((folder / f["path"]).stat().st_size == f["size"] for f in record["files"])

    result = verify_model(manifest, cache)
    # every byte checks out; the only problems are the variants this test did not prepare
    assert {(p.where, p.message) for p in result.problems} == {
        (v.name, "not prepared") for v in manifest.variants[1:] if not v.optional
    }
    assert result.prepared == [first]

    again = prepare_models(targets, cache, manifest_dir=MODELS, wheels_dir=wheels_dir)
    assert again.errors == [] and again.done() == []
