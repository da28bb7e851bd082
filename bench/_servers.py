"""Test servers for benchmarks that need one (S3, Azure).

A bench script that needs servers says so on a line of its own:

    # bench-needs: s3, azure

and bench/report.py starts each named server (through STARTERS below)
before running the script, passes what the starter yields (endpoint,
credentials) to the script as environment variables, and stops the server
afterwards, also when the script fails. The S3 and Azure backends add their
starters here, reusing their pytest fixtures' logic (free 127.0.0.1 port,
readiness wait, teardown); until a starter exists, scripts that need it are
reported as skipped with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

# name -> () -> context manager yielding environment variables for the script
STARTERS: dict[str, Callable[[], AbstractContextManager[dict[str, str]]]] = {}

_NEEDS = re.compile(r"^#\s*bench-needs:\s*(.+)$", re.MULTILINE)


def needs(script: Path) -> list[str]:
    """The servers `script` declares with `# bench-needs: a, b`."""
    match = _NEEDS.search(script.read_text())
    if not match:
        return []
    return [name.strip() for name in match.group(1).split(",") if name.strip()]


class Unavailable(Exception):
    """A needed server has no starter (yet)."""


@contextmanager
def started(names: list[str]) -> Iterator[dict[str, str]]:
    """Start every server in `names`; yield their merged environment."""
    missing = [n for n in names if n not in STARTERS]
    if missing:
        raise Unavailable(
            f"no starter for {', '.join(missing)} in bench/_servers.py (it lands with that backend)"
        )
    env: dict[str, str] = {}
    with ExitStack() as stack:
        for name in names:
            env.update(stack.enter_context(STARTERS[name]()))
        yield env
