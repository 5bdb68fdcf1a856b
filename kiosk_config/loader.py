"""Load the kiosk config: a TOML file, then ``KIOSK_*`` environment overrides, then validation.

Overrides name a key by its table and field joined with a double underscore:
``KIOSK_SERVER__PORT=9000`` sets ``[server] port``. Only names with a double
underscore are overrides (a misspelt table or key in one is an error); other
``KIOSK_*`` variables belong to the scripts and are left alone, except the
two folder shorthands ``KIOSK_DATA_DIR`` and ``KIOSK_MODEL_CACHE``. A value is read as JSON when
it parses (numbers, booleans, lists), otherwise as a plain string.
``KIOSK_CONFIG`` names the config file when no path is given.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runtime.errors import ConfigError

from .schema import KioskConfig

ENV_PREFIX = "KIOSK_"
MAX_CONFIG_BYTES = 1024 * 1024

DEFAULT_CONFIG_FILE = Path(__file__).resolve().parent / "kiosk.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist",
            hint="pass an existing file with --config, or unset KIOSK_CONFIG to use the default",
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {size} bytes; the limit is {MAX_CONFIG_BYTES}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"environment variable {name} does not name a config key",
                hint="use KIOSK_<TABLE>__<KEY>, for example KIOSK_SERVER__PORT=9000",
            )
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(parts[0], {})[parts[1]] = value
    # Shorthands for the two folders every install sets.
    for env, key in (("KIOSK_DATA_DIR", "data_dir"), ("KIOSK_MODEL_CACHE", "model_cache")):
        if environ.get(env):
            out.setdefault("paths", {})[key] = environ[env]
    return out


def _merge(base: dict[str, Any], over: dict[str, dict[str, Any]]) -> dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for table, values in over.items():
        current = merged.get(table)
        merged[table] = {**current, **values} if isinstance(current, dict) else dict(values)
    return merged


def _allowed(err: dict[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "remove it; see docs/configuration.md for the keys of each table"
    if kind == "literal_error" and "expected" in ctx:
        return f"one of {ctx['expected']}"
    for bound, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx:
            return f"a value {word} {ctx[bound]}"
    return err["msg"]


def validate_config(data: dict[str, Any], source: str) -> KioskConfig:
    """Validate a plain dict; errors name the source, the dotted key and what is allowed."""
    try:
        return KioskConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            got = err.get("input")
            got_text = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {key}{got_text}: {err['msg']}; allowed: {_allowed(err)}")
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(lines)) from None


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> KioskConfig:
    """Read, override and validate the config. Raises :class:`ConfigError` on any problem."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get("KIOSK_CONFIG"):
        path = environ["KIOSK_CONFIG"]
    file = Path(path) if path is not None else DEFAULT_CONFIG_FILE
    data = _read_toml(file)
    overrides = _env_overrides(environ)
    source = str(file) + (" + KIOSK_* environment" if overrides else "")
    return validate_config(_merge(data, overrides), source)
