"""`python -m keysentry.api [--host H] [--port P]`: what `keysentry serve` runs, without the CLI."""

from __future__ import annotations

import argparse
import sys

from keysentry.api.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keysentry.api", description="Run the keysentry REST API."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on; 0 picks a free one")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    return serve(args.host, args.port, log_level=args.log_level)


if __name__ == "__main__":
    sys.exit(main())
