"""The composition root: the only module (with cli) that imports `actors` and `web`.

`serve`, `sync --once`, `verify` and `demo` are wired here.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mailbridge.errors import MailbridgeError

if TYPE_CHECKING:
    from mailbridge.cli import Context


class NotYetAvailable(MailbridgeError):
    """A command whose engine is not in this build."""


async def cmd_serve(ctx: "Context", args: argparse.Namespace) -> int:
    raise NotYetAvailable("`serve` is not available in this build yet")


async def cmd_sync(ctx: "Context", args: argparse.Namespace) -> int:
    raise NotYetAvailable("`sync --once` is not available in this build yet")


async def cmd_verify(ctx: "Context", args: argparse.Namespace) -> int:
    raise NotYetAvailable("`verify` is not available in this build yet")


async def cmd_demo(ctx: "Context", args: argparse.Namespace) -> int:
    raise NotYetAvailable("`demo` is not available in this build yet")
