"""The node configuration: typed sections, loaded from TOML, validated with clear errors.

Every problem is reported as ``<file>: [section] key: what is wrong`` (or the environment
variable that caused it). Unknown sections and keys are errors with a "did you mean" hint, so a
typo never silently falls back to a default.

Environment overrides: ``POT_<SECTION>_<KEY>`` (upper case) replaces one value after the file is
read, e.g. ``POT_MINER_GPUS=0,2`` or ``POT_NODE_CHAIN_ID=pot-test``. Lists are comma-separated;
booleans are ``true``/``false``/``1``/``0``/``yes``/``no``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import tomli_w

from pot_cli.errors import ConfigError
from pot_cli.gpu_selection import GpuSelectionError, parse_gpu_spec

Role = Literal["miner", "validator"]
Compression = Literal["auto", "none", "int8", "topk"]

MAX_CONFIG_BYTES = 1024 * 1024


def _meta(
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    required: bool = False,
) -> dict[str, Any]:
    return {"help": help, "min": min, "max": max, "required": required}


@dataclass
class NodeSection:
    """Who this node is and which network it belongs to."""

    name: str = field(default="pot-node", metadata=_meta("A name for this node, shown to peers."))
    role: Role = field(default="miner", metadata=_meta("miner or validator.", required=True))
    chain_id: str = field(
        default="pot-devnet-1",
        metadata=_meta("Network identifier; every signature is bound to it.", required=True),
    )
    log_level: Literal["debug", "info", "warning", "error"] = field(
        default="info", metadata=_meta("Log verbosity: debug, info, warning or error.")
    )


@dataclass
class NetworkSection:
    """How this node reaches the network."""

    validators: list[str] = field(
        default_factory=lambda: ["http://127.0.0.1:7701"],
        metadata=_meta("HTTP endpoints of the validators to talk to."),
    )
    listen: str = field(
        default="127.0.0.1:7701",
        metadata=_meta("Address this node's API listens on (host:port)."),
    )
    max_message_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=_meta("Largest message accepted from a peer, in bytes.", min=1024),
    )
    request_timeout_seconds: float = field(
        default=10.0, metadata=_meta("Timeout of one request to a peer.", min=0.1, max=600)
    )


@dataclass
class MinerSection:
    """Settings of pot mine (one worker per GPU)."""

    gpus: str = field(
        default="all", metadata=_meta('GPUs to mine on: "all" or indices like "0,2,5".')
    )
    task: str = field(default="digits", metadata=_meta("Training task to work on."))
    compression: Compression = field(
        default="auto",
        metadata=_meta(
            "Gradient compression: auto (what the network takes), none, int8 or topk; "
            "a value the network does not take is refused before any work is done."
        ),
    )
    topk_fraction: float = field(
        default=0.2,
        metadata=_meta("Fraction of coordinates kept by topk compression.", min=1e-6, max=1.0),
    )
    electricity_price_per_kwh: float = field(
        default=0.15,
        metadata=_meta("Your electricity price per kWh, to show earnings net of power.", min=0),
    )
    power_limit_watts: int = field(
        default=0, metadata=_meta("Power limit to request per GPU (0 = leave as is).", min=0)
    )
    api_listen: str = field(
        default="127.0.0.1:4067",
        metadata=_meta("Local read-only status API of the miner (host:port)."),
    )
    temperature_limit_c: int = field(
        default=83,
        metadata=_meta("Pause a GPU's worker above this temperature (Celsius).", min=40, max=110),
    )
    temperature_resume_c: int = field(
        default=75,
        metadata=_meta("Resume a paused worker once its GPU is at or below this.", min=20, max=110),
    )


@dataclass
class ValidatorSection:
    """Settings of pot validate (a PBFT replica). Its peers are [network] validators: every
    genesis validator's endpoint, in genesis order (its own included)."""

    genesis: str = field(
        default="genesis.toml",
        metadata=_meta("Genesis file of the network (relative paths: from the node's home)."),
    )
    round_seconds: float = field(
        default=10.0, metadata=_meta("Length of the submission window.", min=0.05)
    )
    view_change_timeout_seconds: float = field(
        default=10.0,
        metadata=_meta("How long a backup waits for the primary's block.", min=0.05),
    )
    checkpoint_interval: int = field(
        default=16, metadata=_meta("Blocks between consensus checkpoints.", min=1)
    )


@dataclass
class PotConfig:
    """The whole configuration file."""

    node: NodeSection = field(default_factory=NodeSection)
    network: NetworkSection = field(default_factory=NetworkSection)
    miner: MinerSection = field(default_factory=MinerSection)
    validator: ValidatorSection = field(default_factory=ValidatorSection)


_SECTION_TYPES: dict[str, type] = {
    "node": NodeSection,
    "network": NetworkSection,
    "miner": MinerSection,
    "validator": ValidatorSection,
}

# ------------------------------------------------------------------------------ helpers


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is list:
        return "a list of strings"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


def _describe(value: Any) -> str:
    kind = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "table",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


def _coerce(tp: Any, value: Any) -> tuple[bool, Any]:
    """Check ``value`` against the annotation ``tp``; return (ok, normalised value)."""
    origin = get_origin(tp)
    if origin is Literal:
        return (value in get_args(tp) and isinstance(value, str), value)
    if origin is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return ok, list(value) if ok else value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in this module, not bad input


def _parse_env(tp: Any, text: str) -> Any:
    origin = get_origin(tp)
    if origin is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    if tp is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        return text
    if tp is int:
        try:
            return int(text)
        except ValueError:
            return text
    if tp is float:
        try:
            return float(text)
        except ValueError:
            return text
    return text


def _field_types(section_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


# ---------------------------------------------------------------------------- validation


def _validate_value(
    where: str, section: str, key: str, tp: Any, meta: Mapping[str, Any], value: Any
) -> tuple[str | None, Any]:
    ok, norm = _coerce(tp, value)
    if not ok:
        return (
            f"{where}: [{section}] {key}: expected {_type_name(tp)}, got {_describe(value)}",
            value,
        )
    if isinstance(norm, int | float) and not isinstance(norm, bool):
        if isinstance(norm, float) and norm != norm:  # NaN
            return f"{where}: [{section}] {key}: must be a number, got nan", value
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and norm < lo:
            return f"{where}: [{section}] {key}: must be >= {lo}, got {norm}", value
        if hi is not None and norm > hi:
            return f"{where}: [{section}] {key}: must be <= {hi}, got {norm}", value
    if section == "miner" and key == "gpus":
        err = _check_gpus(norm)
        if err:
            return f"{where}: [{section}] {key}: {err}", value
    if section == "node" and key in ("name", "chain_id"):
        err = _check_identifier(norm)
        if err:
            return f"{where}: [{section}] {key}: {err}", value
    if key in ("validators", "peers"):
        for url in norm:
            err = _check_url(url)
            if err:
                return f"{where}: [{section}] {key}: {err}", value
    if key.endswith("listen") and isinstance(norm, str):
        err = _check_host_port(norm)
        if err:
            return f"{where}: [{section}] {key}: {err}", value
    return None, norm


def _check_gpus(text: str) -> str | None:
    try:
        parse_gpu_spec(text)
    except GpuSelectionError as exc:
        return str(exc)
    return None


_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_identifier(text: str) -> str | None:
    if not _IDENTIFIER.match(text):
        return (
            "expected 1-64 characters of letters, digits, '.', '_' or '-' "
            f"(starting with a letter or digit), got {text!r}"
        )
    return None


def _check_url(text: str) -> str | None:
    scheme, sep, rest = text.partition("://")
    if scheme not in ("http", "https") or not sep:
        return f"expected an http:// or https:// endpoint, got {text!r}"
    return _check_host_port(rest.rstrip("/"))


def _check_host_port(text: str) -> str | None:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"expected host:port (port 1-65535), got {text!r}"
    return None


def config_from_dict(
    data: Mapping[str, Any],
    *,
    where: str = "<config>",
    environ: Mapping[str, str] | None = None,
) -> PotConfig:
    """Build and validate a :class:`PotConfig`; raise :class:`ConfigError` listing every problem.

    ``environ`` (default: none) supplies ``POT_<SECTION>_<KEY>`` overrides.
    """
    problems: list[str] = []
    sections: dict[str, Any] = {}
    for name in data:
        if name not in _SECTION_TYPES:
            problems.append(
                f"{where}: unknown section [{name}]{_suggest(name, list(_SECTION_TYPES))}"
            )
    for name, cls in _SECTION_TYPES.items():
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: [{name}] must be a table, got {_describe(raw)}")
            raw = {}
        types_ = _field_types(cls)
        metas = {f.name: f.metadata for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in types_:
                problems.append(
                    f"{where}: [{name}] unknown key '{key}'{_suggest(key, list(types_))}"
                )
                continue
            err, norm = _validate_value(where, name, key, types_[key], metas[key], value)
            if err:
                problems.append(err)
            else:
                values[key] = norm
        for key, meta in metas.items():
            if meta.get("required") and key not in raw:
                problems.append(f"{where}: [{name}] missing required key '{key}'")
        if environ:
            for key, tp in types_.items():
                var = f"POT_{name.upper()}_{key.upper()}"
                if var in environ:
                    err, norm = _validate_value(
                        f"environment variable {var}",
                        name,
                        key,
                        tp,
                        metas[key],
                        _parse_env(tp, environ[var]),
                    )
                    if err:
                        problems.append(err)
                    else:
                        values[key] = norm
        if not problems:
            sections[name] = cls(**values)
    if problems:
        raise ConfigError("\n".join(problems))
    return PotConfig(**sections)


def load_config(
    path: Path, *, environ: Mapping[str, str] | None = None, missing_ok: bool = False
) -> PotConfig:
    """Read and validate the TOML config at ``path``.

    ``environ`` defaults to ``os.environ`` (pass ``{}`` to ignore overrides). With
    ``missing_ok`` a missing file yields the defaults (plus overrides).
    """
    env = os.environ if environ is None else environ
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if missing_ok:
            return config_from_dict(
                {"node": {"role": "miner", "chain_id": "pot-devnet-1"}},
                where=str(path),
                environ=env,
            )
        raise ConfigError(f"{path}: config file not found (run 'pot init' to create one)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config file is {size} bytes; the limit is {MAX_CONFIG_BYTES}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config is not valid UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    return config_from_dict(data, where=str(path), environ=env)


def config_to_dict(config: PotConfig) -> dict[str, dict[str, Any]]:
    """The config as plain TOML-able data (section -> key -> value)."""
    return {name: dataclasses.asdict(getattr(config, name)) for name in _SECTION_TYPES}


def render_config(config: PotConfig) -> str:
    """TOML text of ``config`` with a comment above every section and key (tomli-w values)."""
    lines = [
        "# pot node configuration (written by 'pot init').",
        "# Check it with 'pot config validate'. Any key can be overridden by an environment",
        "# variable POT_<SECTION>_<KEY>, e.g. POT_MINER_GPUS=0,2.",
        "",
    ]
    for name, cls in _SECTION_TYPES.items():
        section = getattr(config, name)
        lines.append("# " + " ".join((cls.__doc__ or "").split()))
        lines.append(f"[{name}]")
        for f in dataclasses.fields(cls):
            lines.append(f"# {f.metadata.get('help', '')}")
            lines.append(tomli_w.dumps({f.name: getattr(section, f.name)}).rstrip("\n"))
        lines.append("")
    return "\n".join(lines)


def write_config(path: Path, config: PotConfig, *, force: bool = False) -> None:
    """Write ``config`` to ``path`` atomically; refuse to overwrite unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{path}: a config already exists (use --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_config(config), encoding="utf-8")
    tmp.replace(path)


def default_config(role: Role = "miner", name: str = "pot-node") -> PotConfig:
    cfg = PotConfig()
    cfg.node.role = role
    cfg.node.name = name
    return cfg
