"""The only asyncio seam: trio-facing wrappers over asyncpg and aioimaplib.

Nothing outside this package imports asyncio, trio_asyncio, aioimaplib or asyncpg
(`tests/unit/test_seam.py` enforces it).  Everything here is called from trio, needs the
asyncio loop opened by `open_loop()` (or `run()`), and raises only `mailbridge.errors`.
"""

from mailbridge.aio.loop import open_loop, run

__all__ = ["open_loop", "run"]
