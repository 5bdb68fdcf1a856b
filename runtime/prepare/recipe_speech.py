"""Recipes for the speech models: the faster-whisper transcriber and the hibari voice.

Both models arrive ready to run (CTranslate2 weights, an int8 ONNX voice), so
the recipes only place the checked files in the variant folder and then run the
model once on a fixed input: a variant that cannot load and produce output is
never installed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from runtime.errors import ModelRecipeError

from .recipes import RecipeContext, recipe

WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


def _place(src: Path, dst: Path) -> None:
    """Hard-link when the cache sits on one file system (no second 145 MB copy), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@recipe("whisper-ct2")
def whisper_ct2(ctx: RecipeContext) -> None:
    """CTranslate2 Whisper folder + a smoke transcription of one second of tone at the variant's
    precision."""
    for name in WHISPER_FILES:
        src = ctx.source(name)
        if not src.is_file():
            raise ModelRecipeError(
                f"model {ctx.manifest.id}: source file {name} is missing from {ctx.files_dir}",
                hint=f"list {name} under [[files]] in models/{ctx.manifest.id}.toml",
            )
        _place(src, ctx.out_dir / name)
    compute_type = str(ctx.variant.options.get("compute_type", ctx.variant.precision))
    ctx.report(f"{ctx.manifest.id}: loading with CTranslate2 ({compute_type}) for a smoke run")
    from runtime.inference.transcribe_whisper import load_whisper_model

    model = load_whisper_model(ctx.out_dir, compute_type=compute_type, threads=ctx.threads)
    t = np.arange(16000, dtype=np.float32) / 16000.0
    tone = (0.1 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    try:
        segments, info = model.transcribe(tone, language="en", beam_size=1, without_timestamps=True)
        list(segments)
    except Exception as exc:  # CTranslate2 raises plain RuntimeError/ValueError
        raise ModelRecipeError(
            f"model {ctx.manifest.id}: smoke transcription failed: {exc}"
        ) from exc
    ctx.report(f"{ctx.manifest.id}: smoke run ok ({info.duration:.1f} s of audio)")


@recipe("hibari-voice")
def hibari_voice(ctx: RecipeContext) -> None:
    """The hibari ONNX voice + a smoke synthesis through the installed hibari phonemizer."""
    name = ctx.manifest.files[0].name
    _place(ctx.source(name), ctx.out_dir / name)
    from runtime.inference.synth_hibari import HibariSynthesizer

    synth = HibariSynthesizer(ctx.out_dir / name, model_id=ctx.manifest.id, threads=1)
    audio = synth.synthesize("Ready.", language="en")
    if audio.samples.size < audio.sample_rate // 10:
        raise ModelRecipeError(
            f"model {ctx.manifest.id}: smoke synthesis produced {audio.samples.size} samples"
        )
    ctx.report(
        f"{ctx.manifest.id}: smoke synthesis ok ({audio.samples.size / audio.sample_rate:.2f} s)"
    )
