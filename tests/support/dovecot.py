"""Start the test suite's private Dovecot servers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest


def running_dovecot(base: Path, **options) -> Iterator:
    """A private Dovecot under `base` for a fixture's life (the run stops, exit 2, with the
    install hint when Dovecot cannot start)."""
    from mailbridge.testing.dovecot import DovecotError, DovecotServer

    server = DovecotServer(base, **options)
    try:
        server.start()
    except DovecotError as exc:
        pytest.exit(str(exc), 2)
    yield server
    server.stop()
