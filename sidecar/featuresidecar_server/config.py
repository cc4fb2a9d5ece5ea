"""Settings from flags, ``FEATURE_SIDECAR_*`` environment variables and a YAML file.

Precedence: flag > environment > file > default. Each option is declared once here; the CLI,
the environment reader and the file reader all work from these declarations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .policy_yaml import parse_duration

if TYPE_CHECKING:
    # The CLI's; a worker reads its settings from its start-up message and never parses flags.
    import argparse

ENV_PREFIX = "FEATURE_SIDECAR_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Option:
    name: str  # flag name without dashes, e.g. "redis-timeout"
    kind: str  # str | int | float | duration | bool | list | choice
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    # A boolean that defaults to true is switched off by --no-<name>.
    negatable: bool = False

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    for option in options:
        flag = f"--{option.name}"
        import argparse

        common: dict[str, Any] = {"dest": option.dest, "default": argparse.SUPPRESS}
        help_text = f"{option.help} [env {option.env}]"
        if option.kind == "bool":
            if option.negatable:
                parser.add_argument(
                    f"--no-{option.name}", action="store_false", help=help_text, **common
                )
            else:
                parser.add_argument(flag, action="store_true", help=help_text, **common)
        elif option.kind == "list":
            parser.add_argument(
                flag, action="append", metavar=option.metavar, help=help_text, **common
            )
        else:
            parser.add_argument(
                flag,
                metavar=option.metavar,
                choices=option.choices or None,
                help=help_text,
                **common,
            )


def resolve(
    options: Sequence[Option],
    flags: argparse.Namespace,
    env: Mapping[str, str],
    file_values: Mapping[str, Any],
) -> dict[str, Any]:
    """The value of every option, from the highest-precedence source that sets it."""
    values: dict[str, Any] = {}
    known = {o.dest for o in options} | {"config"}
    for key in file_values:
        if key.replace("-", "_") not in known:
            raise ConfigError(f"config file: unknown setting {key!r}")
    for option in options:
        if hasattr(flags, option.dest):
            raw, where = getattr(flags, option.dest), f"--{option.name}"
        elif option.env in env or _negative_env(option) in env:
            if option.env in env:
                raw, where = env[option.env], option.env
            else:
                where = _negative_env(option)
                raw = not _parse_bool(env[where], where)
        elif option.dest in file_values or option.name in file_values:
            key = option.dest if option.dest in file_values else option.name
            raw, where = file_values[key], f"config file key {key!r}"
        else:
            values[option.dest] = option.default
            continue
        values[option.dest] = convert(option, raw, where)
    return values


def _negative_env(option: Option) -> str:
    return f"{ENV_PREFIX}NO_{option.dest.upper()}" if option.negatable else "\0"


def convert(option: Option, raw: Any, where: str) -> Any:
    kind = option.kind
    try:
        if kind == "bool":
            return raw if isinstance(raw, bool) else _parse_bool(str(raw), where)
        if kind == "list":
            if isinstance(raw, str):
                return [part.strip() for part in raw.split(",") if part.strip()]
            if isinstance(raw, list):
                return [str(item) for item in raw]
            raise ConfigError(f"{where}: expected a list")
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "duration":
            return parse_duration(_number_or_text(raw))
        if kind == "choice":
            if str(raw) not in option.choices:
                raise ConfigError(f"{where}: {raw!r} is not one of {', '.join(option.choices)}")
            return str(raw)
        if raw is None:
            return None
        return str(raw)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        # Only duration errors explain themselves; int() and float() messages are noise.
        detail = f" ({exc})" if kind == "duration" and str(exc) else ""
        noun = {"int": "integer", "float": "number"}.get(kind, kind)
        raise ConfigError(f"{where}: {raw!r} is not a valid {noun}{detail}") from None


def _number_or_text(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def _parse_bool(text: str, where: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{where}: {text!r} is not a boolean (use true or false)")


def read_config_file(path: str) -> dict[str, Any]:
    from . import yaml_lines

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml_lines.load_plain(handle.read())
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror}") from None
    except yaml_lines.YamlError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({exc.problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings")
    return data


def load(
    options: Sequence[Option], flags: argparse.Namespace, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    environment = os.environ if env is None else env
    path = getattr(flags, "config", None) or environment.get(ENV_PREFIX + "CONFIG")
    file_values = read_config_file(path) if path else {}
    return resolve(options, flags, environment, file_values)


def read_flag_file(flag: str, path: str) -> bytes:
    """The bytes of a file named by a flag; a ConfigError naming the flag and the file when it
    cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror}") from None


def redis_password(password_file: str | None) -> str | None:
    """The Redis password from FEATURE_SIDECAR_REDIS_PASSWORD, else from the file named by
    --redis-password-file, else None (a password in the URL needs neither)."""
    env = os.environ.get(ENV_PREFIX + "REDIS_PASSWORD")
    if env:
        return env
    if password_file:
        data = read_flag_file("--redis-password-file", password_file)
        try:
            return data.decode("utf-8").strip() or None
        except UnicodeDecodeError:
            raise ConfigError(f"--redis-password-file {password_file}: not UTF-8 text") from None
    return None
