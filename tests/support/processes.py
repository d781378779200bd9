"""`mailbridge` as a long-running subprocess (`serve`, `demo`), its output collected in
the background.  Blocking on purpose (stdlib subprocess and threads): the process under
test is another process, and bench/ uses these too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

from tests.support.cli import REPO


class MailbridgeProcess:
    """`python -m mailbridge ARGS` with `env` as its whole environment; every line it
    prints lands in `out` (stdout) or `err` (stderr) as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mailbridge", *args], env=env, cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self.threads = [threading.Thread(target=self._drain, args=(s, sink), daemon=True)
                        for s, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.threads:
            t.start()

    @staticmethod
    def _drain(stream: IO[str], sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def text(self) -> str:
        """Everything printed so far: stdout, then stderr."""
        return "".join(self.out) + "".join(self.err)

    def join_output(self, timeout: float) -> None:
        """Wait (at most `timeout` s each) until both streams are read to their end."""
        for t in self.threads:
            t.join(timeout)


class Serve(MailbridgeProcess):
    """A `mailbridge serve --bind BIND` subprocess on the environment `env` adds to ours."""

    def __init__(self, env: dict[str, str], bind: str = "127.0.0.1:0") -> None:
        full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MAILBRIDGE_ENCRYPTION_KEY")}
        full.update(env)
        super().__init__(["serve", "--bind", bind], full)

    @property
    def url(self) -> str:
        for line in self.out:
            if "listening on " in line:
                return line.split("listening on ", 1)[1].split()[0]
        raise AssertionError("serve printed no URL")

    @property
    def owner(self) -> str:
        return f"{socket.gethostname()}:{self.proc.pid}"

    def wait_serving(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line.startswith("serving as") for line in self.out):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"serve did not start: {''.join(self.out)} {''.join(self.err)}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.join_output(2)
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
