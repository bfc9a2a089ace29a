"""What the configuration's sources may hold, and how its mistakes are said.

``verifier.settings`` defines the settings; this module checks the ``X402_*`` environment
against them (pydantic-settings ignores a variable that names nothing) and turns a pydantic
``ValidationError`` into one line that names each key and never repeats a value.
"""

from __future__ import annotations

import json
import os
import re
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from verifier.errors import ConfigError

CONFIG_ENV = "X402_CONFIG"
ENV_PREFIX = "X402_"
# The relayer's private key for local settlement of exact payments (a secret: never in the file).
RELAYER_KEY_ENV = "X402_RELAYER_KEY"
# The bearer token of the facilitator endpoint and of the gate's receipts endpoint (a secret).
API_TOKEN_ENV = "X402_API_TOKEN"
# Variables with the prefix that are not settings: the file's path, the two secrets above, and
# those the repository's development tools read (devchain's binaries, the tests' fuzzing budget).
NOT_SETTINGS = frozenset(
    {
        CONFIG_ENV,
        RELAYER_KEY_ENV,
        API_TOKEN_ENV,
        "X402_ANVIL",
        "X402_REDIS_SERVER",
        "X402_FUZZ_EXAMPLES",
    }
)


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}" if out else part
        else:  # a network id, a key id
            out += f'."{part}"' if out else f'"{part}"'
    return out


def one_line(exc: ValidationError) -> str:
    """Each error as ``key: what``; never the input, which may be a secret."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        where = _location(error["loc"])
        # Our own messages name their key already (routes[0].path: ...).
        parts.append(message if not where or message.startswith(where) else f"{where}: {message}")
    return "; ".join(parts)


def _setting(root: type[BaseModel], parts: list[str]) -> Any:
    """The annotation of the setting at ``parts`` (lowercase names), or ``None``."""
    annotation: Any = root
    for part in parts:
        annotation = _unoptional(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None or not part:
                return None
            annotation = field.annotation
        elif get_origin(annotation) is dict and part:
            annotation = get_args(annotation)[1]  # a table of any keys: networks, keys, options
        else:
            return None
    return annotation


def _unoptional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not NoneType]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_complex(annotation: Any) -> bool:
    # What pydantic-settings reads as JSON from a variable.
    annotation = _unoptional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return annotation in (dict, list) or get_origin(annotation) in (dict, list, tuple, set)


def check_environment(environ: dict[str, str] | os._Environ[str], root: type[BaseModel]) -> None:
    """``ConfigError`` for an ``X402_*`` variable that names no setting, or whose value is not
    the JSON its setting needs (tables and lists are JSON: ``X402_CHALLENGE__KEYS='{...}'``).

    pydantic-settings ignores a variable that names nothing (``X402_WORKER_MAX_JOBS``, with one
    underscore), so a typo would silently keep the default.
    """
    for name, value in environ.items():
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in NOT_SETTINGS:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        annotation = _setting(root, parts)
        if annotation is None:
            hint = _suggestion(root, name)
            raise ConfigError(
                f"environment variable {name} names no setting"
                + (f" (did you mean {hint}?)" if hint else "")
                + "; nested keys take two underscores: X402_<SECTION>__<KEY>"
            )
        if _is_complex(annotation):
            try:
                json.loads(value)
            except ValueError as exc:
                # Not the value: it may be a secret (X402_CHALLENGE__KEYS).
                raise ConfigError(
                    f"environment variable {name} is not JSON (this setting is a table or "
                    f'a list, e.g. X402_CHALLENGE__KEYS=\'{{"k1": "<64 hex>"}}\'): '
                    f"{type(exc).__name__} at char {getattr(exc, 'pos', '?')}"
                ) from None


def _suggestion(root: type[BaseModel], name: str) -> str | None:
    """The same name with one ``_`` doubled, when that names a setting."""
    body = name[len(ENV_PREFIX) :]
    for at in (i for i, ch in enumerate(body) if ch == "_"):
        candidate = body[:at] + "_" + body[at:]
        if "___" not in candidate and _setting(root, candidate.lower().split("__")) is not None:
            return name[: len(ENV_PREFIX)] + candidate
    return None
