"""Check options from the operator's settings: one rule for the CLI, the service and the monitor.

Kept apart from the engine and the store so `keysentry check` imports neither SQLAlchemy nor
the service layer (a full check process must start and answer quickly).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keysentry.diagnosis.engine import CheckOptions
    from keysentry.diagnosis.profiles import Profile
    from keysentry.settings import Settings

OptionsFactory = Callable[[str, str, str], "CheckOptions"]


def options_factory(
    settings: Settings,
    *,
    base_url: str | None = None,
    custom_profiles: Mapping[str, Profile] | None = None,
) -> OptionsFactory:
    """CheckOptions per (exchange, environment, profile) from the operator's settings, the way
    `keysentry check` builds them; `base_url` overrides the configured one (CLI only: base URLs are
    operator configuration, never something a tenant sends)."""
    from keysentry.diagnosis.engine import CheckOptions
    from keysentry.diagnosis.profiles import get_profile

    def build(exchange: str, environment: str, profile_name: str) -> CheckOptions:
        profile = get_profile(profile_name, custom_profiles)
        urls = settings.base_urls(exchange)
        own = base_url or urls.get(environment) or (urls.get("default") if environment == "mainnet" else None)
        others: dict[str, str | None] = {
            env: url for env, url in urls.items() if env not in {"default", environment}
        }
        if environment != "mainnet" and "default" in urls:
            others["mainnet"] = urls["default"]
        return CheckOptions(
            profile=profile,
            environment=environment,
            base_url=own,
            other_environments=others,
            egress_ips=settings.egress_ip_list,
            expiry_window_days=settings.expiry_window_days,
            rotation_age_days=settings.rotation_age_days,
        )

    return build
