"""Exchange simulators: Binance, OKX, Bybit and KuCoin speaking their real wire protocols.

`sim` is at the bottom of the layering: it imports nothing of the client side, so a
misreading of an exchange's documentation cannot be shared by a signer and its verifier.
"""
