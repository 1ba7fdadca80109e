"""Electricity: the price per kWh (flag, else the miner config, else the default) and costs."""

from __future__ import annotations

import os
from pathlib import Path

from pot_cli.errors import UsageError

DEFAULT_PRICE_PER_KWH = 0.15
ENV_OVERRIDE = "POT_MINER_ELECTRICITY_PRICE_PER_KWH"  # the config's environment override


def resolve_price(flag: float | None, config_path: Path) -> tuple[float, str]:
    """The price to use and where it came from ("--price-per-kwh", the config file, "default").

    A missing config file means the defaults; an invalid one raises its ``ConfigError``.
    """
    if flag is not None:
        if flag < 0:
            raise UsageError(f"--price-per-kwh must be >= 0, got {flag}")
        return flag, "--price-per-kwh"
    from pot_cli.config import load_config

    exists = Path(config_path).exists()
    cfg = load_config(config_path, missing_ok=True)
    price = float(cfg.miner.electricity_price_per_kwh)
    if ENV_OVERRIDE in os.environ:
        return price, ENV_OVERRIDE
    return price, (str(config_path) if exists else "default")


def cost_per_hour(watts: float | None, price_per_kwh: float) -> float | None:
    """Currency units per hour at ``watts`` (None when the power is unknown)."""
    if watts is None:
        return None
    return watts / 1000.0 * price_per_kwh
