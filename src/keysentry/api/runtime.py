"""What one API process runs on: the store, the vault, one Transport and one DiagnosisEngine.

`Runtime.build(settings)` makes them without touching the network or the database (the vault
is opened, so a sealed vault refuses here, before anything listens); `start()` migrates the
database in the running event loop; `close()` closes the transport's sessions and the pool.
Options per check come from `keysentry.connections.options_factory`, exactly as the CLI builds
them: base URLs, egress addresses, expiry window and profiles are the operator's settings. Keys
added, updated or refreshed through the API are scheduled by the monitor's re-check policy and
announce their transitions with its expiry thresholds, both from the same KEYSENTRY_MONITOR_*
settings the monitor reads (keysentry.monitor.service.MonitorConfig).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keysentry.connections import ConnectionService, NewKey, options_factory
from keysentry.domain import Diagnosis
from keysentry.domain.secrets import Secret

if TYPE_CHECKING:
    from keysentry.diagnosis.profiles import Profile
    from keysentry.exchanges.transport import Timeouts, Transport
    from keysentry.settings import Settings
    from keysentry.store.db import Database
    from keysentry.vault import Vault


def timeouts(settings: Settings) -> Timeouts:
    """Every outbound call is bounded: connect within 5 s (or less), whole request within the setting."""
    from keysentry.exchanges.transport import Timeouts

    return Timeouts(connect=min(5.0, settings.request_timeout_s), total=settings.request_timeout_s)


def custom_profiles(settings: Settings) -> Mapping[str, Profile]:
    """The operator's profiles (KEYSENTRY_PROFILES_FILE), read the way the CLI reads them."""
    from keysentry.check_command import _custom_profiles

    found: Mapping[str, Profile] | None = _custom_profiles(settings.profiles_file)
    return dict(found or {})


def open_vault(settings: Settings) -> Vault:
    from keysentry.vault import Vault

    return Vault.open(
        settings.data_dir,
        master_key=settings.master_key.get_secret_value() if settings.master_key else None,
        master_key_file=settings.master_key_file,
        kms_uri=settings.kms_uri,
        create=True,
    )


def database(settings: Settings) -> Database:
    """The store named by the settings, not yet connected nor migrated."""
    from keysentry.store.db import Database, create_engine, resolve_url

    url = resolve_url(settings.database_url, settings.data_dir)
    return Database(create_engine(url), url)


@dataclass
class Runtime:
    db: Database
    vault: Vault
    transport: Transport
    service: ConnectionService
    profiles: Mapping[str, Profile]

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        from keysentry.diagnosis.engine import DiagnosisEngine
        from keysentry.exchanges.transport import Transport
        from keysentry.monitor.service import MonitorConfig, next_check_function

        profiles = custom_profiles(settings)
        policy = (
            MonitorConfig().policy()
        )  # a bad KEYSENTRY_MONITOR_* value refuses to start, as the monitor does
        vault = open_vault(settings)  # VaultSealed here: refuse to start
        db = database(settings)
        transport = Transport(egress_ips=settings.egress_ip_list, timeouts=timeouts(settings))
        service = ConnectionService(
            db,
            vault=vault,
            engine=DiagnosisEngine(transport),
            options=options_factory(settings, custom_profiles=profiles),
            next_check=next_check_function(policy),
            expiring_days=policy.expiring_days,
        )
        return cls(db, vault, transport, service, profiles)

    async def start(self) -> None:
        from keysentry.store.migrate import upgrade_engine

        await upgrade_engine(self.db.engine, self.db.url)

    async def close(self) -> None:
        try:
            await self.transport.close()
        finally:
            await self.db.close()


async def diagnose(
    service: ConnectionService, exchange: str, key: NewKey, *, environment: str, profile: str
) -> Diagnosis:
    """Check a key with the service's own engine and options, storing nothing.

    ConnectionService has no public check-only method yet; using its engine and options means a
    diagnose sees exactly what an add of the same key would (same base URLs, egress, profiles)."""
    options = service._options_for(exchange, environment, profile)
    engine = service._need_engine()
    secret = key.secret.reveal() if isinstance(key.secret, Secret) else key.secret
    passphrase = key.passphrase.reveal() if isinstance(key.passphrase, Secret) else key.passphrase
    return await engine.diagnose(
        exchange, key.api_key, secret, passphrase, options, key_version=key.key_version
    )
