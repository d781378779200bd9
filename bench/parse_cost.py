"""The sync's per-message Python cost, in process, without servers: parse_fetch (with the
header extraction inside it, timed also on its own) and `_columns` of the write.

The FETCH responses are what Dovecot sends for the sync's metadata FETCH of generated
messages (`mailbridge.testing.mailgen.corpus`): the header section of the eight fields,
folds kept, in responses of `--batch` messages each.  `--encoded` sets the share of
messages with encoded words (corpus default 0.04; the other kinds as the corpus has them).

    .venv/bin/python bench/parse_cost.py -n 20000
    .venv/bin/python bench/parse_cost.py -n 20000 --encoded 0.3 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "unit" / "imap"))

from imap_wire import lines_from_wire  # noqa: E402

from mailbridge.imap.fetch import parse_fetch  # noqa: E402
from mailbridge.imap.headers import extract_header_fields  # noqa: E402
from mailbridge.imap.models import MessageMeta  # noqa: E402
from mailbridge.store.messages import _columns  # noqa: E402
from mailbridge.testing.mailgen import corpus  # noqa: E402

FIELDS = b"MESSAGE-ID SUBJECT FROM TO CC DATE IN-REPLY-TO REFERENCES"
WANTED = {f.lower() for f in FIELDS.split()}
FLAG_SETS = (b"\\Seen", b"\\Seen", b"\\Seen \\Answered", b"", b"\\Flagged \\Seen")
BASE = datetime(2023, 1, 2, 8, 0, 0)


def header_section(message: bytes) -> bytes:
    """BODY[HEADER.FIELDS (...)] of a message: the wanted fields, folds kept, a blank line."""
    head = message.split(b"\r\n\r\n", 1)[0]
    out, keep = [], False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        keep = line.split(b":", 1)[0].strip().lower() in WANTED
        if keep:
            out.append(line)
    return b"\r\n".join(out) + b"\r\n\r\n"


def responses(n: int, batch: int, encoded: float) -> tuple[list[list[bytes | bytearray]], list[bytes]]:
    """(the lines of each FETCH command, the header sections) of n generated messages."""
    sections = [header_section(m) for m in corpus(n, mix=(encoded, 0.04, 0.02))]
    commands = []
    for lo in range(0, n, batch):
        wire = bytearray()
        for i in range(lo, min(lo + batch, n)):
            uid = i + 1
            when = (BASE + timedelta(seconds=37 * i)).strftime("%d-%b-%Y %H:%M:%S +0000").encode()
            wire += (b"* %d FETCH (UID %d FLAGS (%s) INTERNALDATE \"%s\" "
                     b"RFC822.SIZE %d MODSEQ (%d) BODY[HEADER.FIELDS (%s)] {%d}\r\n"
                     % (uid, uid, FLAG_SETS[i % len(FLAG_SETS)], when, 2000 + 7 * i, 10 + i, FIELDS,
                        len(sections[i])))
            wire += sections[i] + b")\r\n"
        wire += b"A001 OK Fetch completed.\r\n"
        commands.append(lines_from_wire(bytes(wire)))
    return commands, sections


def best(f, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=2000, help="messages per FETCH command (MAILBRIDGE_BATCH_SIZE)")
    ap.add_argument("--write-batch", type=int, default=2000, help="messages per `_columns` call")
    ap.add_argument("--encoded", type=float, default=0.04)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="print cProfile's top functions of one pass")
    args = ap.parse_args()
    commands, sections = responses(args.n, args.batch, args.encoded)
    metas: list[MessageMeta] = []

    def fetch() -> None:
        metas.clear()
        for lines in commands:
            metas.extend(m for m in parse_fetch(lines) if isinstance(m, MessageMeta))

    def headers() -> None:
        for s in sections:
            extract_header_fields(s)

    def columns() -> None:
        for lo in range(0, len(metas), args.write_batch):
            _columns(metas[lo:lo + args.write_batch])

    fetch()
    assert len(metas) == args.n, len(metas)
    n = args.n
    t_fetch = best(fetch, args.repeat)
    t_head = best(headers, args.repeat)
    t_cols = best(columns, args.repeat)
    print(f"{n} messages, {args.encoded:.0%} encoded, best of {args.repeat}, µs per message:")
    print(f"  parse_fetch (headers included) {t_fetch / n * 1e6:6.2f}")
    print(f"    of which headers alone      {t_head / n * 1e6:6.2f}")
    print(f"    FETCH items (the rest)      {(t_fetch - t_head) / n * 1e6:6.2f}")
    print(f"  _columns                       {t_cols / n * 1e6:6.2f}")
    print(f"  total                          {(t_fetch + t_cols) / n * 1e6:6.2f}")
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(lambda: (fetch(), columns()))
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
