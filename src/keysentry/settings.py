"""Operator configuration: `KEYSENTRY_*` environment variables and an optional config file.

The variable names are public and kept stable (DESIGN.md, "Configuration contract").
Base URLs are operator configuration only: nothing a tenant or a request sends can point
keysentry at another URL.

Per-environment base URLs follow one pattern, read from the environment:
`KEYSENTRY_<EXCHANGE>_BASE_URL` (the default environment, usually mainnet) and
`KEYSENTRY_<EXCHANGE>_<ENVIRONMENT>_BASE_URL` (e.g. KEYSENTRY_BINANCE_TESTNET_BASE_URL),
so a key unknown on mainnet can be looked up on the other configured environments.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keysentry.process import DEFAULT_GC_THRESHOLD

EXCHANGES = ("binance", "okx", "bybit", "kucoin")


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("keysentry", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEYSENTRY_", extra="ignore", frozen=True)

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    master_key: SecretStr | None = None
    master_key_file: Path | None = None
    kms_uri: str | None = None
    egress_ips: str = ""
    admin_token: SecretStr | None = None
    redis_url: str | None = None
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    api_passphrase: SecretStr | None = None
    expiry_window_days: int = Field(14, ge=0, le=365)
    rotation_age_days: int = Field(90, ge=1, le=3650)
    request_timeout_s: float = Field(10.0, gt=0, le=120)
    profiles_file: Path | None = None
    # Proxies trusted for X-Forwarded-For/-Proto (comma-separated addresses or networks, or "*").
    forwarded_allow_ips: str = ""
    # Young-generation threshold of the processes that run checks (keysentry.process); 0: Python's.
    gc_threshold: int = Field(DEFAULT_GC_THRESHOLD, ge=0, le=1_000_000)

    @field_validator("egress_ips")
    @classmethod
    def _check_ips(cls, value: str) -> str:
        for item in _split(value):
            try:
                ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(
                    f"KEYSENTRY_EGRESS_IPS: {item!r} is not an IP address; "
                    "give a comma-separated list such as 127.0.0.2,127.0.0.3"
                ) from None
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_proxies(cls, value: str) -> str:
        for item in _split(value):
            if item == "*":
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"KEYSENTRY_FORWARDED_ALLOW_IPS: {item!r} is not an address or network; give the "
                    "proxies in front of keysentry, comma-separated, e.g. 10.0.0.5,10.1.0.0/16 (or * for any)"
                ) from None
        return ",".join(_split(value))

    @property
    def egress_ip_list(self) -> tuple[str, ...]:
        return tuple(_split(self.egress_ips))

    def base_urls(self, exchange: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """environment -> base URL configured for `exchange` ('default' for the bare variable)."""
        env = os.environ if environ is None else environ
        prefix = f"KEYSENTRY_{exchange.upper()}_"
        out: dict[str, str] = {}
        for name, value in env.items():
            if not (name.startswith(prefix) and name.endswith("BASE_URL") and value.strip()):
                continue
            middle = name[len(prefix) : -len("BASE_URL")].strip("_")
            out[middle.lower() or "default"] = value.strip()
        return out


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)


# Settings classes whose variables do not start with plain KEYSENTRY_, by class name.
_PREFIXES = {"MonitorConfig": "KEYSENTRY_MONITOR_", "MetricsConfig": "KEYSENTRY_MONITOR_METRICS_"}


def settings_problem(error: ValidationError) -> str:
    """What is wrong, named by variable: `KEYSENTRY_GC_THRESHOLD: Input should be ...`.

    Never the value: pydantic's own text repeats the input, which may be a secret.
    """
    prefix = _PREFIXES.get(error.title, "KEYSENTRY_")
    parts = []
    for err in error.errors():
        name = f"{prefix}{'_'.join(str(part) for part in err['loc']).upper()}"
        message = err["msg"].removeprefix("Value error, ")  # our validators' own sentences
        parts.append(message if message.startswith(name) else f"{name}: {message}")
    return "; ".join(parts)
