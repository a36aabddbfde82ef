"""`keysentry check`: credentials from the environment, a hidden prompt or a file; never argv.

Exit codes follow the monitoring-plugin convention: 0 ok, 1 warning, 2 error, 3 unknown or
usage error. With several keys, the worst one decides.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keysentry.domain import Diagnosis, Severity, exit_code_for
from keysentry.domain.status import EXIT_CODES

USAGE_ERROR = EXIT_CODES[Severity.UNKNOWN]


class UsageError(Exception):
    """Bad input from the person at the terminal; the message says what to do."""


@dataclass(frozen=True, slots=True, repr=False)
class KeyInput:
    exchange: str
    api_key: str
    secret: str
    passphrase: str | None = None
    label: str | None = None
    key_version: int = 2  # KuCoin only: 1 sends the passphrase in clear, 2 and 3 HMAC it


def read_env_credentials(exchange: str) -> KeyInput | None:
    key = os.environ.get("KEYSENTRY_API_KEY")
    secret = os.environ.get("KEYSENTRY_API_SECRET")
    if not key and not secret:
        return None
    if not key or not secret:
        missing = "KEYSENTRY_API_SECRET" if key else "KEYSENTRY_API_KEY"
        raise UsageError(f"{missing} is not set; set both KEYSENTRY_API_KEY and KEYSENTRY_API_SECRET")
    return KeyInput(
        exchange,
        key,
        secret,
        os.environ.get("KEYSENTRY_API_PASSPHRASE") or None,
        key_version=_env_key_version(),
    )


def _env_key_version() -> int:
    raw = os.environ.get("KEYSENTRY_API_KEY_VERSION", "").strip()
    return _key_version(raw, "KEYSENTRY_API_KEY_VERSION") if raw else 2


def _key_version(raw: object, where: str) -> int:
    if str(raw) not in {"1", "2", "3"}:
        raise UsageError(f"{where} must be 1, 2 or 3 (KuCoin's API key version), not {raw!r}")
    return int(str(raw))


def prompt_credentials(exchange: str, needs_passphrase: bool) -> KeyInput:
    if not sys.stdin.isatty():
        raise UsageError(
            "no credentials: set KEYSENTRY_API_KEY and KEYSENTRY_API_SECRET"
            + (" and KEYSENTRY_API_PASSPHRASE" if needs_passphrase else "")
            + ", or use --from-file, or run in a terminal to be prompted"
        )
    import typer

    key = typer.prompt(f"{exchange} API key", hide_input=True)
    secret = typer.prompt(f"{exchange} API secret", hide_input=True)
    passphrase = typer.prompt(f"{exchange} API passphrase", hide_input=True) if needs_passphrase else None
    return KeyInput(exchange, key, secret, passphrase, key_version=_env_key_version())


def read_key_file(path: Path, default_exchange: str) -> list[KeyInput]:
    """JSON (an object or a list), JSON lines, or YAML; each entry has api_key and secret."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    entries: Any
    try:
        if path.suffix in {".yaml", ".yml"}:
            import yaml

            entries = yaml.safe_load(text)
        elif path.suffix == ".jsonl":
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            entries = json.loads(text)
    except Exception:
        # The parser's message may quote the file, which holds secrets.
        raise UsageError(
            f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}; nothing was checked"
        ) from None
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path}: expected a list of keys with api_key and secret")
    out: list[KeyInput] = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not entry.get("api_key") or not entry.get("secret"):
            raise UsageError(f"{path}: entry {i} needs api_key and secret")
        out.append(
            KeyInput(
                exchange=str(entry.get("exchange") or default_exchange),
                api_key=str(entry["api_key"]),
                secret=str(entry["secret"]),
                passphrase=str(entry["passphrase"]) if entry.get("passphrase") else None,
                label=str(entry["label"]) if entry.get("label") else None,
                key_version=_key_version(entry["key_version"], f"{path}: entry {i}: key_version")
                if entry.get("key_version") is not None
                else 2,
            )
        )
    return out


async def check_all(
    keys: Sequence[KeyInput],
    *,
    profile_name: str,
    environment: str,
    base_url: str | None,
    base_url_exchange: str | None = None,
    concurrency: int = 20,
    progress: bool = False,
) -> list[Diagnosis]:
    from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine
    from keysentry.diagnosis.options import options_factory
    from keysentry.diagnosis.profiles import get_profile
    from keysentry.exchanges.transport import Timeouts, Transport
    from keysentry.process import tune_collector
    from keysentry.settings import load_settings

    settings = load_settings()
    tune_collector(settings.gc_threshold)
    custom = _custom_profiles(settings.profiles_file)
    get_profile(profile_name, custom)  # an unknown profile is a usage error before anything is sent
    sem = asyncio.Semaphore(concurrency)
    async with Transport(
        egress_ips=settings.egress_ip_list,
        timeouts=Timeouts(connect=min(5.0, settings.request_timeout_s), total=settings.request_timeout_s),
    ) as transport:
        engine = DiagnosisEngine(transport)

        configured = options_factory(settings, custom_profiles=custom)
        given = options_factory(settings, base_url=base_url, custom_profiles=custom)

        def options_for(exchange: str) -> CheckOptions:
            # --base-url names one exchange's simulator or proxy: it applies to that exchange only.
            build = given if base_url_exchange in (None, exchange) else configured
            return build(exchange, environment, profile_name)

        async def one(k: KeyInput) -> Diagnosis:
            async with sem:
                return await engine.diagnose(
                    k.exchange,
                    k.api_key,
                    k.secret,
                    k.passphrase,
                    options_for(k.exchange),
                    key_version=k.key_version,
                )

        if not progress:
            return list(await asyncio.gather(*(one(k) for k in keys)))
        from rich.progress import Progress

        with Progress(transient=True, console=_console(stderr=True)) as bar:
            task = bar.add_task("checking keys", total=len(keys))

            async def tracked(k: KeyInput) -> Diagnosis:
                result = await one(k)
                bar.advance(task)
                return result

            return list(await asyncio.gather(*(tracked(k) for k in keys)))


def _custom_profiles(path: Path | None) -> Any:
    if path is None:
        return None
    from keysentry.diagnosis.profiles import load_profiles

    try:
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read profiles file {path}: {e}") from None
    try:
        return load_profiles(data.get("profiles", data) if isinstance(data, dict) else data)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


_STYLE = {
    Severity.OK: "bold green",
    Severity.WARNING: "bold dark_orange",
    Severity.ERROR: "bold red",
    Severity.UNKNOWN: "bold bright_black",
}


def render_human(diagnoses: Sequence[Diagnosis], labels: Sequence[str | None]) -> None:
    from rich.markup import escape

    console = _console()
    for diagnosis, label in zip(diagnoses, labels, strict=True):
        style = _STYLE[diagnosis.severity]
        name = f"{diagnosis.exchange} {diagnosis.masked_key or ''}".strip()
        if label:
            name += f" ({escape(label)})"
        console.print(f"[{style}]{diagnosis.status.value.upper()}[/] {escape(name)}")
        console.print(f"  {escape(diagnosis.summary)}")
        facts = []
        if diagnosis.account_id:
            facts.append(f"account {escape(diagnosis.account_id)}")
        if diagnosis.permissions:
            facts.append("permissions " + ", ".join(sorted(p.value for p in diagnosis.permissions)))
        if diagnosis.expires_in_days is not None:
            facts.append(f"expires in {diagnosis.expires_in_days} days")
        if facts:
            console.print("  " + "; ".join(facts), style="dim")
        for f in diagnosis.findings:
            f_style = _STYLE[f.severity] if f.status is not None else "dim"
            if f.message == diagnosis.summary:
                console.print(f"  [{f_style}]•[/] [{f_style}]{escape(f.code)}[/]")
            else:
                console.print(f"  [{f_style}]•[/] [{f_style}]{escape(f.code)}[/]: {escape(f.message)}")
            for note in f.details.get("evidence", ()):
                console.print(f"      how we know: {escape(str(note))}", style="dim")
            for i, step in enumerate(f.remedy, 1):
                console.print(f"      {i}. {escape(step)}")
        console.print()


def run(
    exchange: str,
    *,
    profile: str,
    environment: str,
    base_url: str | None,
    as_json: bool,
    from_file: Path | None,
) -> int:
    from pydantic import ValidationError
    from rich.markup import escape

    from keysentry.credentials import SUPPORTED_EXCHANGES, requires_passphrase
    from keysentry.settings import settings_problem

    exchange = exchange.lower()
    try:
        if exchange not in SUPPORTED_EXCHANGES:
            raise UsageError(
                f"unsupported exchange {exchange!r}; supported: {', '.join(SUPPORTED_EXCHANGES)}"
            )
        if from_file is not None:
            keys = read_key_file(from_file, exchange)
        else:
            found = read_env_credentials(exchange)
            keys = [found or prompt_credentials(exchange, requires_passphrase(exchange))]
        for k in keys:
            if k.exchange not in SUPPORTED_EXCHANGES:
                raise UsageError(f"unsupported exchange {k.exchange!r} in {from_file}")
        diagnoses = asyncio.run(
            check_all(
                keys,
                profile_name=profile,
                environment=environment,
                base_url=base_url,
                base_url_exchange=exchange,
                progress=from_file is not None and not as_json and sys.stderr.isatty(),
            )
        )
    except UsageError as e:
        _console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False)
        return USAGE_ERROR
    except ValidationError as e:  # KEYSENTRY_* settings: named by variable, the value never repeated
        _console(stderr=True).print(f"[bold red]error:[/] {escape(settings_problem(e))}", highlight=False)
        return USAGE_ERROR
    except ValueError as e:  # operator configuration: profile, environment, base URL
        _console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False)
        return USAGE_ERROR
    if as_json:
        for d in diagnoses:
            out = d.to_json()
            sys.stdout.write(json.dumps(out, separators=(",", ":"), ensure_ascii=False) + "\n")
    else:
        render_human(diagnoses, [k.label for k in keys])
    return max(exit_code_for(d.status) for d in diagnoses)
