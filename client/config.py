"""Configuration files: TOML read with errors that name the file, key and expectation.

Every role (CLI, controller, executor) keeps its settings in a TOML file. The
helpers here turn a malformed or missing value into one ``ConfigError`` line,
``<file>: key 'tls.ca': expected a path to an existing file, got '/nope'``,
which the entry points print without a traceback.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CLIENT_CONFIG = Path("~/.config/novaops/config.toml")
CONFIG_ENV = "NOVAOPS_CONFIG"


# Builtin aliases: ConfigSection has methods named str/int/float/bool.
_Str = str
_Int = int
_Float = float
_Bool = bool


class ConfigError(Exception):
    """A configuration file is missing or holds a value of the wrong kind."""


class ConfigSection:
    """Typed access to one table of a TOML document, remembering where it came from."""

    def __init__(self, path: Path, data: Mapping[_Str, Any], prefix: _Str = "") -> None:
        self.source = path
        self._data = data
        self._prefix = prefix

    def _key(self, key: _Str) -> _Str:
        return f"{self._prefix}{key}"

    def error(self, key: _Str, expected: _Str, got: object = None) -> ConfigError:
        suffix = "" if got is None else f", got {got!r}"
        return ConfigError(f"{self.source}: key '{self._key(key)}': expected {expected}{suffix}")

    def has(self, key: _Str) -> _Bool:
        return key in self._data

    def section(self, key: _Str, *, required: _Bool = False) -> ConfigSection:
        value = self._data.get(key)
        if value is None:
            if required:
                raise self.error(key, "a table [" + self._key(key) + "]")
            value = {}
        if not isinstance(value, Mapping):
            raise self.error(key, "a table", value)
        return ConfigSection(self.source, value, f"{self._key(key)}.")

    def str(self, key: _Str, default: _Str | None = None) -> _Str:
        value = self._data.get(key, default)
        if value is None:
            raise self.error(key, "a string (required)")
        if not isinstance(value, _Str) or not value:
            raise self.error(key, "a non-empty string", value)
        return value

    def optional_str(self, key: _Str) -> _Str | None:
        if key not in self._data:
            return None
        return self.str(key)

    def int(self, key: _Str, default: _Int | None = None, *, minimum: _Int | None = None) -> _Int:
        value = self._data.get(key, default)
        if value is None:
            raise self.error(key, "an integer (required)")
        if isinstance(value, _Bool) or not isinstance(value, _Int):
            raise self.error(key, "an integer", value)
        if minimum is not None and value < minimum:
            raise self.error(key, f"an integer >= {minimum}", value)
        return value

    def float(self, key: _Str, default: _Float | None = None, *, minimum: _Float = 0.0) -> _Float:
        value = self._data.get(key, default)
        if value is None:
            raise self.error(key, "a number (required)")
        if isinstance(value, _Bool) or not isinstance(value, _Int | _Float):
            raise self.error(key, "a number", value)
        if value < minimum:
            raise self.error(key, f"a number >= {minimum}", value)
        return _Float(value)

    def bool(self, key: _Str, default: _Bool | None = None) -> _Bool:
        value = self._data.get(key, default)
        if not isinstance(value, _Bool):
            raise self.error(key, "true or false", value)
        return value

    def str_list(self, key: _Str, default: list[_Str] | None = None) -> list[_Str]:
        value = self._data.get(key, default)
        if value is None:
            raise self.error(key, "a list of strings (required)")
        if not isinstance(value, list) or not all(isinstance(v, _Str) and v for v in value):
            raise self.error(key, "a list of non-empty strings", value)
        return list(value)

    def str_map(self, key: _Str) -> dict[_Str, _Str]:
        value = self._data.get(key, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(k, _Str) and isinstance(v, _Str) for k, v in value.items()
        ):
            raise self.error(key, "a table of string values", value)
        return dict(value)

    def path(self, key: _Str, default: _Str | None = None, *, must_exist: _Bool = False) -> Path:
        """A path; relative paths are resolved against the config file's folder."""
        raw = self.str(key, default)
        resolved = Path(raw).expanduser()
        if not resolved.is_absolute():
            resolved = self.source.parent / resolved
        if must_exist and not resolved.exists():
            raise self.error(key, "a path to an existing file or folder", raw)
        return resolved

    def choice(self, key: _Str, choices: tuple[_Str, ...], default: _Str | None = None) -> _Str:
        value = self.str(key, default)
        if value not in choices:
            raise self.error(key, "one of " + "|".join(choices), value)
        return value

    def address(self, key: _Str, default: _Str | None = None) -> _Str:
        value = self.str(key, default)
        check_address(value, lambda: self.error(key, "host:port", value))
        return value

    def addresses(self, key: _Str) -> list[_Str]:
        values = self.str_list(key)
        if not values:
            raise self.error(key, "at least one host:port")
        for value in values:
            check_address(value, lambda v=value: self.error(key, "a list of host:port", v))
        return values


def check_address(value: str, make_error: Any) -> None:
    """Raise ``make_error()`` unless value is host:port with a port in 1..65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise make_error()


def load_toml(path: Path) -> ConfigSection:
    """Read a TOML file; ConfigError names the file and the parse problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return ConfigSection(path.resolve(), data)


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for mutual TLS. ``insecure`` disables TLS (explicit opt-in only)."""

    ca: Path | None
    cert: Path | None
    key: Path | None
    insecure: bool = False

    @staticmethod
    def from_section(section: ConfigSection) -> TLSFiles:
        tls = section.section("tls")
        if tls.has("insecure") and tls.bool("insecure"):
            return TLSFiles(None, None, None, insecure=True)
        if not section.has("tls"):
            raise section.error("tls", "a [tls] table with ca, cert and key (mTLS is required)")
        return TLSFiles(
            ca=tls.path("ca", must_exist=True),
            cert=tls.path("cert", must_exist=True),
            key=tls.path("key", must_exist=True),
        )


@dataclass(frozen=True)
class ClientConfig:
    """Where the controllers are and how to authenticate to them."""

    path: Path
    controllers: list[str]
    tls: TLSFiles
    timeout_seconds: float = 10.0

    @staticmethod
    def load(path: Path) -> ClientConfig:
        doc = load_toml(path)
        return ClientConfig(
            path=doc.source,
            controllers=doc.addresses("controllers"),
            tls=TLSFiles.from_section(doc),
            timeout_seconds=doc.float("timeout_seconds", 10.0, minimum=0.1),
        )


def resolve_client_config_path(explicit: str | None) -> Path:
    """--config, then $NOVAOPS_CONFIG, then ~/.config/novaops/config.toml."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_CLIENT_CONFIG.expanduser()
