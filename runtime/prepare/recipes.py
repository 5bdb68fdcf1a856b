"""Recipes: named steps that turn a model's assembled source files into a prepared variant.

A recipe is a function registered under a name that manifests use
(``recipe = "copy"``). Built-in recipes live in the ``recipe_*`` modules of
this package and register themselves the same way a third-party one would.
A recipe writes only into ``ctx.out_dir`` (a private temporary folder that
is renamed into place when the recipe succeeds), so a crash or Ctrl-C never
leaves a half-prepared variant behind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import ModelManifestError

from .manifest import ModelManifest, Variant

# Modules holding the built-in recipes; imported on first lookup.
BUILTIN_RECIPE_MODULES = (
    "runtime.prepare.recipe_basic",
    "runtime.prepare.recipe_embedding",
    "runtime.prepare.recipe_generation",
    "runtime.prepare.recipe_speech",
)


@dataclass
class RecipeContext:
    manifest: ModelManifest
    variant: Variant
    files_dir: Path  # assembled and checksum-verified source files, by ModelFile.name
    out_dir: Path  # write the variant's files here
    threads: int = 2
    report: Callable[[str], None] = print  # one line of progress for the user
    options: dict[str, Any] = field(default_factory=dict)
    # Versions of the tools the recipe used ({"openvino": "2025.3.0"}); recorded in PREPARED.json.
    tool_versions: dict[str, str] = field(default_factory=dict)

    def source(self, name: str) -> Path:
        return self.files_dir / name


RecipeFn = Callable[[RecipeContext], None]
_RECIPES: dict[str, RecipeFn] = {}
_loaded = False


def recipe(name: str) -> Callable[[RecipeFn], RecipeFn]:
    """Register a recipe under ``name``."""

    def register(fn: RecipeFn) -> RecipeFn:
        if name in _RECIPES and _RECIPES[name] is not fn:
            raise ValueError(f"recipe {name!r} is registered twice")
        _RECIPES[name] = fn
        return fn

    return register


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    for module in BUILTIN_RECIPE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but needs something missing
                raise
    _loaded = True


def get_recipe(name: str) -> RecipeFn:
    _load_builtins()
    try:
        return _RECIPES[name]
    except KeyError:
        raise ModelManifestError(
            f"unknown model recipe {name!r}", hint=f"known recipes: {sorted(_RECIPES)}"
        ) from None
