"""Settings from a TOML file's profiles and from ``PITREOS_*`` environment variables.

A profile is a ``[profile.NAME]`` table whose keys are long option names (``store``,
``tag``, ``keep-last``, ``run-before``...): a key applies to every command that has that
option. A ``[profile.NAME.COMMAND]`` table (``[profile.prod.gc]``, ``[profile.prod.catalog
sync]`` is written ``[profile.prod."catalog sync"]``) applies to that command only, and
wins over the flat keys. Every option can also come from the environment: the flat
``PITREOS_<OPTION>`` (``PITREOS_KEEP_LAST``) or, winning over it, ``PITREOS_<COMMAND>_
<OPTION>`` (``PITREOS_GC_KEEP_LAST``). Precedence: flag > environment > profile > default,
which is click's own order once the profile is handed to it as the ``default_map``.

The profile is chosen by ``--profile NAME`` (or ``PITREOS_PROFILE``) before click parses
anything, since it supplies the defaults of that parse; without one, a profile named
``default`` applies when the file has it.
"""

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import platformdirs

from .errors import UsageError
from .select import did_you_mean

ENV_PREFIX = "PITREOS_"
DEFAULT_PROFILE = "default"


class ConfigError(UsageError):
    """The config file, or a profile in it, is wrong: the message names the file and key."""


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    flat: dict[str, Any] = field(default_factory=dict)  # key -> value, for every command
    per_command: dict[str, dict[str, Any]] = field(default_factory=dict)  # "gc" -> {...}


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/pitreos/config.toml`` (``~/.config/pitreos/config.toml``)."""
    return Path(platformdirs.user_config_dir("pitreos")) / "config.toml"


def option_value(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``args`` (the last one), read
    before click parses: the profile gives click its defaults."""
    value = None
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg == f"--{name}" and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.partition("=")[2]
    return value


def load_profile(args: Sequence[str], environ: Mapping[str, str]) -> Profile | None:
    """The profile the command line or environment chooses, or ``default`` if the
    file has one; None when there is nothing to apply."""
    explicit_path = option_value(args, "config") or environ.get(f"{ENV_PREFIX}CONFIG")
    name = option_value(args, "profile") or environ.get(f"{ENV_PREFIX}PROFILE")
    path = Path(explicit_path) if explicit_path else default_config_path()
    if not path.exists():
        if explicit_path:
            raise ConfigError(f"config file {path} does not exist")
        if name:
            raise ConfigError(f"no profile {name!r}: config file {path} does not exist")
        return None
    import tomllib  # here: a run without a config file is spared ~5 ms (importtime)

    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(doc) - {"profile"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown table or key {unknown[0]!r} (profiles "
                          "are [profile.NAME] tables)")
    profiles = doc.get("profile", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"config file {path}: 'profile' must be a table of [profile.NAME]")
    if name is None:
        if DEFAULT_PROFILE not in profiles:
            return None
        name = DEFAULT_PROFILE
    if name not in profiles:
        raise ConfigError(f"config file {path} has no profile {name!r}"
                          f"{did_you_mean(name, profiles)}")
    table = profiles[name]
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [profile.{name}] must be a table")
    flat = {k: v for k, v in table.items() if not isinstance(v, dict)}
    per_command = {k: v for k, v in table.items() if isinstance(v, dict)}
    return Profile(name, path, flat, per_command)


def commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    """Every command under ``group`` by its full name ("backup", "catalog sync")."""
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from commands(command, f"{full} ")
        else:
            yield full, command


def long_name(param: click.Parameter) -> str | None:
    """The name a profile key and an environment variable use: the long option name
    without its dashes (``keep-last``); None for arguments and options without one."""
    if not isinstance(param, click.Option):
        return None
    names = [o[2:] for o in param.opts if o.startswith("--")]
    return names[0] if names else None


def env_names(command: str | None, key: str) -> list[str]:
    """The environment variables of option ``key`` of ``command`` (None: a global
    option), most specific first."""
    flat = f"{ENV_PREFIX}{key.upper().replace('-', '_')}"
    if command is None:
        return [flat]
    return [f"{ENV_PREFIX}{command.upper().replace(' ', '_').replace('-', '_')}_"
            f"{key.upper().replace('-', '_')}", flat]


def _options(command: click.Command, *, skip: set[str]) -> dict[str, click.Option]:
    out = {}
    for param in command.params:
        key = long_name(param)
        if key is not None and key not in skip and param.expose_value:
            assert isinstance(param, click.Option)
            out[key] = param
    return out


def _converted(profile: Profile, where: str, key: str, value: Any,
               param: click.Option) -> Any:
    """``value`` checked and converted as the option would convert a flag's value."""
    label = f"config file {profile.path}: [{where}] {key}"
    if param.is_flag and not param.count:
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false")
        return value
    if param.multiple:
        values = value if isinstance(value, list) else [value]
    else:
        if isinstance(value, list | dict):
            raise ConfigError(f"{label} takes one value, not a list")
        values = [value]
    converted = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ConfigError(f"{label}: {item!r} is not a string or a number")
        try:
            converted.append(param.type.convert(item if param.count or not isinstance(
                item, float) else str(item), param, None))
        except click.BadParameter as exc:
            raise ConfigError(f"{label}: {exc.format_message()}") from None
    return tuple(converted) if param.multiple else converted[0]


def default_map(group: click.Group, profile: Profile) -> dict[str, Any]:
    """The profile as click's ``default_map``, every key checked against the options of
    the commands it applies to (an unknown key is an error naming it, never ignored)."""
    global_options = _options(group, skip={"config", "profile", "version", "help"})
    by_command = {name: _options(cmd, skip={"help", *global_options})
                  for name, cmd in commands(group)}
    where = f"profile.{profile.name}"
    known = set(global_options).union(*by_command.values())
    result: dict[str, Any] = {}
    for key, value in profile.flat.items():
        if key not in known:
            raise ConfigError(f"config file {profile.path}: [{where}] unknown key {key!r}"
                              f"{did_you_mean(key, known)}")
        if key in global_options:
            result[global_options[key].name or key] = _converted(
                profile, where, key, value, global_options[key])
        for name, options in by_command.items():
            if key in options:
                _nested(result, name)[options[key].name or key] = _converted(
                    profile, where, key, value, options[key])
    for name, table in profile.per_command.items():
        if name not in by_command:
            raise ConfigError(f"config file {profile.path}: [{where}] has a table {name!r} "
                              f"that is no command{did_you_mean(name, by_command)}")
        options = by_command[name]
        for key, value in table.items():
            if key not in options:
                raise ConfigError(f"config file {profile.path}: [{where}.{name}] unknown "
                                  f"key {key!r} for {name}{did_you_mean(key, options)}")
            _nested(result, name)[options[key].name or key] = _converted(
                profile, f"{where}.{name}", key, value, options[key])
    return result


def _nested(result: dict[str, Any], command: str) -> dict[str, Any]:
    table = result
    for part in command.split(" "):
        table = table.setdefault(part, {})
    return table


def set_environment_names(group: click.Group) -> None:
    """Give every option its ``PITREOS_*`` environment variables (the global options
    keep the ones they declare)."""
    for param in group.params:
        key = long_name(param)
        if key is not None and param.envvar is None and key not in ("version", "help"):
            param.envvar = env_names(None, key)
    for name, command in commands(group):
        for param in command.params:
            key = long_name(param)
            if key is not None and param.expose_value and param.envvar is None \
                    and key != "help":
                param.envvar = env_names(name, key)


@dataclass(frozen=True)
class Origin:
    """Where an effective setting came from, for ``pitreos config show``."""

    key: str
    value: Any
    source: str  # "flag", "env PITREOS_X", "profile NAME (PATH)", "default"
    commands: tuple[str, ...]  # the commands it applies to; () for a global option


def environment_settings(group: click.Group, environ: Mapping[str, str]
                         ) -> Iterator[Origin]:
    """The command options that the environment sets, with their variables (one row a
    variable, naming the commands it applies to)."""
    found: dict[tuple[str, str], list[str]] = {}
    for name, command in commands(group):
        for param in command.params:
            key = long_name(param)
            if key is None or not param.expose_value or not isinstance(param.envvar, list):
                continue
            var = environ_has(param.envvar, environ)
            if var is not None:
                found.setdefault((key, var), []).append(name)
    for (key, var), names in found.items():
        yield Origin(key, environ[var], f"env {var}", tuple(names))


def profile_settings(profile: Profile) -> Iterator[Origin]:
    source = f"profile {profile.name} ({profile.path})"
    for key, value in profile.flat.items():
        yield Origin(key, value, source, ())
    for name, table in profile.per_command.items():
        for key, value in table.items():
            yield Origin(key, value, source, (name,))


def environ_has(names: str | Sequence[str] | None,
                environ: Mapping[str, str] = os.environ) -> str | None:
    """The first of ``names`` set (not empty) in the environment."""
    if names is None:
        return None
    for name in [names] if isinstance(names, str) else names:
        if environ.get(name):
            return name
    return None
