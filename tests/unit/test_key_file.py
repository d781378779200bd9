"""The embedded key file is created once, atomically, however many processes race for it."""

from __future__ import annotations

import multiprocessing
import os
import stat

from mailbridge.config import ensure_key_file


def _race(home: str, start, results) -> None:
    start.wait()
    try:
        results.put(("ok", ensure_key_file(__import__("pathlib").Path(home))))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put(("error", repr(exc)))


def test_racing_processes_all_read_the_one_complete_key(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for round_ in range(5):
        home = tmp_path / f"home-{round_}"  # missing: the processes race to make it too
        start, results = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(str(home), start, results)) for _ in range(8)]
        for p in procs:
            p.start()
        start.set()
        outcomes = [results.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(10)
        assert all(kind == "ok" for kind, _ in outcomes), outcomes
        keys = {key for _, key in outcomes}
        assert len(keys) == 1 and len(keys.pop()) == 44, outcomes
        path = home / "encryption.key"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert sorted(os.listdir(home)) == ["encryption.key"]  # no temporary file left behind
        assert ensure_key_file(home) == outcomes[0][1]
