"""Fixtures of the web page's tests (the bench itself is in web/bench.py)."""

from web.bench import web  # noqa: F401 - the fixture
