"""keysentry: tell exactly why an exchange API key is refused, keep it safe, and re-check it.

Imports here stay light on purpose: `keysentry --help` must answer quickly, so heavy
modules (aiohttp, the simulators, the store) are imported where they are used.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
