"""Run the real `mailbridge` command line as a subprocess (no shortcuts)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        lines = self.out.strip().splitlines()
        return lines[-1] if lines else ""


def run_cli(*args: str, env: dict[str, str], input: str | None = None, timeout: float = 60,
            cwd: Path | None = None) -> Result:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("DATABASE_URL", "MAILBRIDGE_ENCRYPTION_KEY", "IMAP_ENCRYPTION_KEY")}
    full_env.update(env)
    proc = subprocess.run([sys.executable, "-m", "mailbridge", *args], env=full_env, input=input,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO,
                          stdin=None if input is not None else subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout, proc.stderr)
