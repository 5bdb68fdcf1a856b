"""The "copy" recipe: the variant is the assembled source files as they are.

Used when a package already ships the model in its run-time form (an ONNX file,
a GGUF, a CTranslate2 folder). Files are hard-linked when the variant folder is
on the same file system as the assembled files (no second copy of a 1 GB model)
and copied otherwise.

Options (``[variants.options]`` in the manifest):

- ``files``: names of the manifest's files to take (default: all of them).
"""

from __future__ import annotations

import os
import shutil

from runtime.errors import ModelManifestError

from .recipes import RecipeContext, recipe

_OPTIONS = {"files"}


@recipe("copy")
def copy_files(ctx: RecipeContext) -> None:
    unknown = set(ctx.options) - _OPTIONS
    if unknown:
        raise ModelManifestError(
            f"model {ctx.manifest.id} variant {ctx.variant.name}: "
            f"unknown option(s) {sorted(unknown)} for recipe 'copy'",
            hint=f"the copy recipe takes {sorted(_OPTIONS)}",
        )
    known = [f.name for f in ctx.manifest.files]
    names = ctx.options.get("files", known)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelManifestError(
            f"model {ctx.manifest.id} variant {ctx.variant.name}: "
            "option 'files' must be a non-empty list of names"
        )
    for name in names:
        if name not in known:
            raise ModelManifestError(
                f"model {ctx.manifest.id} variant {ctx.variant.name}: "
                f"option 'files' names {name!r}, which is not one of the manifest's files",
                hint=f"choose from {known}",
            )
        src, dst = ctx.source(name), ctx.out_dir / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(src, dst)
