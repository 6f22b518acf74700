"""Shared setup for the Python checks of the Avro schemas and the wire format.

Paths come from golden.py, which takes them from its own location, never from the working
directory, so `pytest tests/py` works from the repository root, from tests/py, or from
anywhere else.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

# golden.py doubles as a script, so it is a plain module next to the tests rather than a
# package; make it importable whatever pytest's import mode is.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from golden import SCHEMA_DIR, schema_paths  # noqa: E402


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # One test id per schema file (e.g. `[event.avsc]`, `[history/event.v1.avsc]`), so a
    # failure names the file.
    if "schema_path" in metafunc.fixturenames:
        paths = schema_paths()
        metafunc.parametrize(
            "schema_path", paths, ids=[p.relative_to(SCHEMA_DIR).as_posix() for p in paths]
        )
