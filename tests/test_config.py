"""Config: round trip, every kind of error names file and key, env overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pot_cli.config import (
    PotConfig,
    config_from_dict,
    config_to_dict,
    default_config,
    load_config,
    write_config,
)
from pot_cli.errors import ConfigError

MINIMAL = '[node]\nrole = "validator"\nchain_id = "pot-test"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_round_trip_default(tmp_path: Path) -> None:
    cfg = default_config("validator", "val-1")
    path = tmp_path / "config.toml"
    write_config(path, cfg)
    assert load_config(path, environ={}) == cfg


@settings(deadline=None, max_examples=40)
@given(
    price=st.floats(min_value=0, max_value=10, allow_nan=False),
    gpus=st.sampled_from(["all", "0", "0,2,5", "1,3", "0-3,6"]),
    compression=st.sampled_from(["none", "int8", "topk"]),
    rate=st.floats(min_value=0, max_value=1),
    peers=st.lists(st.integers(min_value=1, max_value=65535), max_size=4),
    name=st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True),
)
def test_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory,
    price: float,
    gpus: str,
    compression: str,
    rate: float,
    peers: list[int],
    name: str,
) -> None:
    cfg = default_config("miner", name)
    cfg.miner = dataclasses.replace(
        cfg.miner,
        electricity_price_per_kwh=price,
        gpus=gpus,
        compression=compression,  # type: ignore[arg-type]
    )
    cfg.validator.round_seconds = 0.05 + rate
    cfg.network.validators = [f"http://127.0.0.1:{p}" for p in peers]
    path = tmp_path_factory.mktemp("rt") / "config.toml"
    write_config(path, cfg)
    assert load_config(path, environ={}) == cfg


def test_written_config_has_comments(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    write_config(path, default_config())
    text = path.read_text()
    assert "# Your electricity price per kWh" in text
    assert "[miner]" in text and "electricity_price_per_kwh = 0.15" in text


def test_write_refuses_overwrite(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match="--force"):
        write_config(path, default_config())
    assert path.read_text() == MINIMAL


def test_minimal_config_fills_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL), environ={})
    assert cfg.node.role == "validator"
    assert cfg.miner == PotConfig().miner


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[node]\nrole = "miner"\nchain_id = "x"\nrole = "y"\n', "malformed TOML"),
        ("[node\n", "malformed TOML"),
        (
            MINIMAL + '[miner]\nelectricity_price_per_kwh = "cheap"\n',
            r"\[miner\] electricity_price_per_kwh: expected a number, got string 'cheap'",
        ),
        (MINIMAL + "[miner]\ngpus = 3\n", r"\[miner\] gpus: expected a string, got integer 3"),
        (MINIMAL + '[miner]\ngpus = "0,x"\n', r"\[miner\] gpus: bad GPU index 'x'"),
        (MINIMAL + '[miner]\ncompression = "zip"\n', r"\[miner\] compression: expected one of"),
        (
            MINIMAL + "[miner]\ntopk_fraction = 1.5\n",
            r"\[miner\] topk_fraction: must be <= 1.0",
        ),
        (
            MINIMAL + "[validator]\ncheckpoint_interval = true\n",
            r"checkpoint_interval: expected an integer, got boolean",
        ),
        (MINIMAL + '[miner]\napi_listen = "localhost"\n', r"api_listen: expected host:port"),
        (MINIMAL + '[network]\nvalidators = ["ftp://x:1"]\n', r"validators: expected an http"),
        ('[node]\nchain_id = "pot-test"\n', r"\[node\] missing required key 'role'"),
        ('[node]\nrole = "miner"\n', r"\[node\] missing required key 'chain_id'"),
        (MINIMAL + "[node.extra]\n", r"\[node\] unknown key 'extra'"),
        (
            MINIMAL + '[minr]\ngpus = "all"\n',
            r"unknown section \[minr\] \(did you mean 'miner'\?\)",
        ),
        (
            MINIMAL + "[miner]\nelectricity_price = 0.2\n",
            r"unknown key 'electricity_price' \(did you mean 'electricity_price_per_kwh'\?\)",
        ),
        ("node = 3\n", r"\[node\] must be a table"),
        ('[node]\nrole = "miner"\nchain_id = "bad id!"\n', r"chain_id: expected 1-64 characters"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert info.value.exit_code == 2


def test_all_problems_listed_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[miner]\ngpus = 1\ntask = 2\nbogus = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    lines = str(info.value).splitlines()
    assert len(lines) == 3 and all(line.startswith(str(path)) for line in lines)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found.*pot init"):
        load_config(tmp_path / "nope.toml", environ={})
    assert load_config(tmp_path / "nope.toml", environ={}, missing_ok=True) == PotConfig()


def test_binary_and_oversize_files(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(path, environ={})
    path.write_bytes(b"#" * (2 * 1024 * 1024))
    with pytest.raises(ConfigError, match="limit"):
        load_config(path, environ={})


def test_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    env = {
        "POT_MINER_GPUS": "0,2",
        "POT_MINER_ELECTRICITY_PRICE_PER_KWH": "0.3",
        "POT_NETWORK_VALIDATORS": "http://127.0.0.1:1,http://127.0.0.1:2",
        "POT_NODE_CHAIN_ID": "pot-other",
    }
    cfg = load_config(path, environ=env)
    assert cfg.miner.gpus == "0,2"
    assert cfg.miner.electricity_price_per_kwh == 0.3
    assert cfg.network.validators == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert cfg.node.chain_id == "pot-other"


def test_bad_environment_override_names_variable(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match="environment variable POT_MINER_POWER_LIMIT_WATTS"):
        load_config(path, environ={"POT_MINER_POWER_LIMIT_WATTS": "lots"})


def test_dict_round_trip() -> None:
    cfg = default_config("validator", "v")
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_shipped_example_configs_validate() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    roles = {}
    for name in ("miner.toml", "validator.toml"):
        roles[name] = load_config(root / name, environ={}).node.role
    assert roles == {"miner.toml": "miner", "validator.toml": "validator"}
