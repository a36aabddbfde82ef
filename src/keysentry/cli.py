"""The `keysentry` command. Every command imports its implementation lazily: `--help` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="keysentry",
    help="Check crypto-exchange API keys: exactly why a key is refused, and how to fix it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def check(
    exchange: Annotated[str, typer.Argument(help="binance, okx, bybit or kucoin")],
    stray: Annotated[list[str] | None, typer.Argument(hidden=True, metavar="")] = None,
    profile: Annotated[
        str, typer.Option(help="requirement profile: trading, futures-trading, read-only, market-making, ...")
    ] = "trading",
    env: Annotated[
        str, typer.Option("--env", help="environment: mainnet, testnet, demo, us, eea, ...")
    ] = "mainnet",
    base_url: Annotated[
        str | None,
        typer.Option(help="replace scheme and host of every API family of the exchange (e.g. a simulator)"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the result as JSON (one object per key)")
    ] = False,
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="check many keys from a JSON, JSON lines or YAML file"),
    ] = None,
) -> None:
    """Check an API key: exactly why it is refused, and how to fix it.

    Credentials come from KEYSENTRY_API_KEY, KEYSENTRY_API_SECRET and KEYSENTRY_API_PASSPHRASE,
    from --from-file, or from a hidden prompt; never from the command line.
    Exit codes: 0 ok, 1 warning, 2 error, 3 unknown or usage error.
    """
    from keysentry.check_command import run

    if stray:
        # Never echo them: a pasted secret on the command line is already in the shell history.
        typer.echo(
            "keysentry check: only the exchange goes on the command line; credentials come from "
            "KEYSENTRY_API_KEY / KEYSENTRY_API_SECRET / KEYSENTRY_API_PASSPHRASE, --from-file or the prompt",
            err=True,
        )
        raise typer.Exit(3)
    raise typer.Exit(
        run(
            exchange,
            profile=profile,
            environment=env,
            base_url=base_url,
            as_json=as_json,
            from_file=from_file,
        )
    )


@app.command()
def add(
    exchange: Annotated[str, typer.Argument(help="binance, okx, bybit or kucoin")],
    label: Annotated[str | None, typer.Option("--label", "-l", help="a name for this connection")] = None,
    profile: Annotated[
        str, typer.Option(help="requirement profile: trading, futures-trading, read-only, ...")
    ] = "trading",
    env: Annotated[str, typer.Option("--env", help="environment: mainnet, testnet, demo, ...")] = "mainnet",
    base_url: Annotated[
        str | None, typer.Option(help="replace scheme and host of the exchange's API (e.g. a simulator)")
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="add keys from a JSON, JSON lines or YAML file (each with a label)"),
    ] = None,
    save_anyway: Annotated[
        bool, typer.Option("--save-anyway", help="store a key whose check failed")
    ] = False,
    key_version: Annotated[
        int, typer.Option("--key-version", min=1, max=3, help="KuCoin API key version")
    ] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Check an API key, then store it encrypted as a connection.

    Credentials come from KEYSENTRY_API_KEY, KEYSENTRY_API_SECRET and KEYSENTRY_API_PASSPHRASE,
    from --from-file, or from a hidden prompt; never from the command line.
    Exit codes: 0 ok, 1 warning, 2 error or refused, 3 usage error.
    """
    from keysentry.connections_command import add as run

    raise typer.Exit(
        run(
            exchange,
            label=label,
            profile=profile,
            environment=env,
            base_url=base_url,
            from_file=from_file,
            save_anyway=save_anyway,
            key_version=key_version,
            as_json=as_json,
        )
    )


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per connection")] = False,
) -> None:
    """List connections: status, expiry and last check (never a secret)."""
    from keysentry.connections_command import list_connections

    raise typer.Exit(list_connections(as_json=as_json))


@app.command()
def refresh(
    connection_id: Annotated[str | None, typer.Argument(metavar="ID", help="the connection to check")] = None,
    all_: Annotated[bool, typer.Option("--all", help="check every connection")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per connection")] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=100, help="checks at a time")] = 8,
) -> None:
    """Check stored keys again and record the results."""
    from keysentry.connections_command import refresh as run

    raise typer.Exit(run(connection_id, all_=all_, as_json=as_json, concurrency=concurrency))


@app.command()
def update(
    connection_id: Annotated[str, typer.Argument(metavar="ID", help="the connection whose key to replace")],
    base_url: Annotated[
        str | None, typer.Option(help="replace scheme and host of the exchange's API")
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="read the new key from a file")
    ] = None,
    save_anyway: Annotated[
        bool,
        typer.Option("--save-anyway", help="switch even if the new key's check failed (same account only)"),
    ] = False,
    key_version: Annotated[
        int, typer.Option("--key-version", min=1, max=3, help="KuCoin API key version")
    ] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Replace a connection's key with a new key of the same account (checked first).

    Credentials come from KEYSENTRY_API_KEY, KEYSENTRY_API_SECRET and KEYSENTRY_API_PASSPHRASE,
    from --from-file, or from a hidden prompt; never from the command line.
    """
    from keysentry.connections_command import update as run

    raise typer.Exit(
        run(
            connection_id,
            base_url=base_url,
            from_file=from_file,
            save_anyway=save_anyway,
            key_version=key_version,
            as_json=as_json,
        )
    )


@app.command()
def remove(
    connection_id: Annotated[str, typer.Argument(metavar="ID", help="the connection to remove")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Remove a connection: its stored key is destroyed; the audit log keeps a record."""
    from keysentry.connections_command import remove as run

    raise typer.Exit(run(connection_id, yes=yes))


@app.command()
def history(
    connection_id: Annotated[str, typer.Argument(metavar="ID", help="the connection")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="how many checks")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per check")] = False,
) -> None:
    """Show a connection's past checks, newest first."""
    from keysentry.connections_command import history as run

    raise typer.Exit(run(connection_id, limit=limit, as_json=as_json))


db_app = typer.Typer(help="The database: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema up to this version of keysentry (also done on every start)."""
    from keysentry.connections_command import db_upgrade as run

    raise typer.Exit(run())


vault_app = typer.Typer(
    help="The vault that encrypts stored keys: status, rotate, rewrap.", no_args_is_help=True
)
app.add_typer(vault_app, name="vault")


@vault_app.command("status")
def vault_status() -> None:
    """Show the keyring, its master key, and whether stored secrets need a rewrap."""
    from keysentry.connections_command import vault_status as run

    raise typer.Exit(run())


@vault_app.command("init")
def vault_init() -> None:
    """Create the master key file and the keyring (the first stored key does it too)."""
    from keysentry.connections_command import vault_init as run

    raise typer.Exit(run())


@vault_app.command("rotate")
def vault_rotate() -> None:
    """Add a key version and make it primary (then run `keysentry vault rewrap`)."""
    from keysentry.connections_command import vault_rotate as run

    raise typer.Exit(run())


@vault_app.command("rewrap")
def vault_rewrap(
    batch: Annotated[int, typer.Option(min=1, help="rows per transaction")] = 500,
    retire: Annotated[
        bool, typer.Option("--retire", help="then drop older key versions if nothing uses them")
    ] = False,
) -> None:
    """Move every stored secret (exchange keys, webhook URLs and secrets) to the newest key version (resumable)."""
    from keysentry.connections_command import vault_rewrap as run

    raise typer.Exit(run(batch=batch, retire=retire))


@app.command()
def sim(
    scenario: Annotated[
        Path | None, typer.Option("--scenario", "-s", help="scenario file (YAML or JSON)")
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="first port; each simulator takes the next one (0: random)")
    ] = 8600,
    list_keys: Annotated[
        bool, typer.Option("--list-keys", help="print the scenario's keys as JSON lines and exit")
    ] = False,
    schema: Annotated[
        bool, typer.Option("--schema", help="print the scenario file's JSON schema and exit")
    ] = False,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="KEYSENTRY_SIM_ADMIN_TOKEN", help="token for the admin endpoint (default: generated)"
        ),
    ] = None,
) -> None:
    """Run the exchange simulators of a scenario (Binance, OKX, Bybit, KuCoin)."""
    from keysentry.sim.runner import print_schema, run_cli

    if schema:
        print_schema()
        raise typer.Exit(0)
    if scenario is None:
        typer.echo("keysentry sim: --scenario FILE is required (or --schema)", err=True)
        raise typer.Exit(3)
    raise typer.Exit(run_cli(scenario, host=host, port=port, list_keys=list_keys, admin_token=admin_token))


@app.command()
def demo(
    port: Annotated[
        int, typer.Option(help="port of the page and API; the simulators take the next ones (0: free ports)")
    ] = 8600,
) -> None:
    """Start everything a newcomer needs to look around (what `make demo` runs)."""
    from keysentry.demo import run_demo

    raise typer.Exit(run_demo(port=port))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: a free one, printed on start)")] = 8080,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error")] = "info",
) -> None:
    """Run the REST API and the web page until Ctrl-C or SIGTERM."""
    from keysentry.token_command import serve as run

    raise typer.Exit(run(host, port, log_level=log_level))


# Shared by `monitor` and `worker`: a worker serves the sum of its pool processes.
MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        envvar="KEYSENTRY_MONITOR_METRICS_PORT",
        help="serve Prometheus metrics on this port (a worker: of all its pool processes)",
    ),
]
MetricsHost = Annotated[
    str,
    typer.Option("--metrics-host", envvar="KEYSENTRY_MONITOR_METRICS_HOST", help="address for the metrics"),
]


@app.command()
def monitor(
    once: Annotated[
        bool, typer.Option("--once", help="check what is due, deliver events, then exit")
    ] = False,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Re-check stored keys as they fall due and send events (local mode: one process)."""
    from keysentry.monitor_command import monitor as run

    raise typer.Exit(run(once=once, metrics_port=metrics_port, metrics_host=metrics_host))


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="worker processes")] = 2,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, solo, threads")] = "prefork",
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR")] = "INFO",
    hostname: Annotated[str | None, typer.Option(help="Celery node name")] = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """A Celery worker (distributed mode, KEYSENTRY_REDIS_URL): checks the batches the beat enqueues."""
    from keysentry.monitor_command import worker as run

    raise typer.Exit(
        run(
            concurrency=concurrency,
            pool=pool,
            loglevel=loglevel,
            hostname=hostname,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        )
    )


@app.command()
def beat(
    schedule_file: Annotated[
        Path | None, typer.Option("--schedule-file", help="Celery beat state file")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR")] = "INFO",
) -> None:
    """The Celery beat (distributed mode): enqueues due batches; run exactly one."""
    from keysentry.monitor_command import beat as run

    raise typer.Exit(run(schedule_file=schedule_file, loglevel=loglevel))


token_app = typer.Typer(help="API tokens of tenants (REST API, web page).", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Argument(help="tenant id, made if new (lowercase, digits, - and _)")],
    name: Annotated[str, typer.Option("--name", help="what the token is for")],
    tenant_name: Annotated[
        str | None, typer.Option("--tenant-name", help="display name of a new tenant")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Make an API token; it is printed once, on stdout alone."""
    from keysentry.token_command import token_create as run

    raise typer.Exit(run(tenant, name=name, tenant_name=tenant_name, as_json=as_json))


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="tok_... from `keysentry token list`")],
) -> None:
    """Revoke a token: requests and web sessions using it stop at once."""
    from keysentry.token_command import token_revoke as run

    raise typer.Exit(run(token_id))


@token_app.command("list")
def token_list(
    tenant: Annotated[str | None, typer.Argument(help="only this tenant's tokens")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List tokens (never their values)."""
    from keysentry.token_command import token_list as run

    raise typer.Exit(run(tenant, as_json=as_json))


def main() -> None:
    # Usage errors exit 3 (unknown), not click's 2, which the contract gives to a key in error.
    # Typer bundles its own click, so set it on the class typer actually raises.
    usage_error: Any = typer.BadParameter.__mro__[1]
    usage_error.exit_code = 3
    app()


if __name__ == "__main__":
    main()
