"""The exchanges room: everything that speaks an exchange's wire protocol, client side.

- one adapter module per exchange (binance.py, okx.py, bybit.py, kucoin.py, ...), small and
  mostly declarative (probes, error-code table, permission mapping) over `base.py`, the
  adapter contract and its shared plumbing;
- `signing.py`: each exchange's signing recipe as a small pure function, written from the
  exchange's documentation and checked against ccxt's signer in tests (never used at run time);
- `transport.py`: the one shared HTTP layer (aiohttp sessions per egress address, timeouts,
  error translation) and the `MockTransport` for unit tests.

Submodules are imported where used, not here: `transport` pulls in aiohttp, and the CLI must
start fast.
"""

__all__ = ["base", "signing", "transport"]
