"""Fuzz every IMAP response parser for as long as asked: the properties of
tests/unit/imap/test_fuzz_parsers.py, run on many more inputs.

Each generated input (near-valid responses, mutations of real ones, wire bytes cut into
lines, random lines; see that module) goes to every parser, which must return a storable
value or raise `ImapProtocolError` (never, for parse_fetch, parse_exists_expunge and
parse_capabilities), and where parse_fetch's fast path reads a FETCH response the
tokenizer must read the same from it.  Inputs come in rounds of `--round` examples, each round with its own
seed, until `--examples` inputs have run or `--seconds` have passed.  Then every parser
reads the long inputs (every head with every long body, `--long-size` bytes each) and
must finish each in under `--long-limit` seconds.

It prints the inputs run per parser, the time spent in each and its slowest input, the
slowest long input per parser, and every failure with its minimal (shrunk) example and
the round's seed to replay it (`--seed`).  Exit status 1 when anything failed.

    .venv/bin/python bench/fuzz.py --seconds 600
    .venv/bin/python bench/fuzz.py --examples 20000 --seed 7
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "unit" / "imap"))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

import test_fuzz_parsers as fuzz  # noqa: E402


def fuzz_round(round_seed: int, examples: int, counts: dict[str, int], spent: dict[str, float],
               slowest: dict[str, tuple[float, int]]) -> str | None:
    """One round of `examples` inputs through every parser; the failure report, or None."""

    @seed(round_seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(lines=fuzz.inputs)
    def run(lines: fuzz.Lines) -> None:
        size = sum(len(part) for part in lines)
        for name in fuzz.PARSERS:
            elapsed = fuzz.check(name, lines)
            counts[name] += 1
            spent[name] += elapsed
            if elapsed > slowest[name][0]:
                slowest[name] = (elapsed, size)
        fuzz.fast_path_agrees(lines)

    try:
        run()
    except Exception as exc:  # the property failed: report it, with the shrunk example
        notes = "\n".join(getattr(exc, "__notes__", []))
        return f"seed {round_seed}: {type(exc).__name__}: {exc}\n{notes}\n{''.join(traceback.format_exception(exc)[-6:])}"
    return None


def long_run(size: int, limit: float) -> tuple[dict[str, tuple[float, str]], list[str]]:
    """Every parser on every long input; (slowest per parser, failures)."""
    worst: dict[str, tuple[float, str]] = {}
    failures: list[str] = []
    for name in fuzz.PARSERS:
        worst[name] = (0.0, "")
        for what, lines in fuzz.long_inputs(name, size, every_head=True):
            try:
                elapsed = fuzz.check(name, lines)
            except Exception as exc:  # a crash on a long input: report, go on
                failures.append(f"{name} on {what}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            if elapsed > worst[name][0]:
                worst[name] = (elapsed, what)
            if elapsed > limit:
                failures.append(f"{name} on {what}: {elapsed:.2f} s (limit {limit} s)")
    return worst, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=None, help="stop after this many inputs (default: no limit)")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop generating after this long (default 60)")
    parser.add_argument("--round", type=int, default=2000, help="inputs per hypothesis run (default 2000)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first round (default: random)")
    parser.add_argument("--long-size", type=int, default=1 << 20, help="bytes of each long input (default 1 MiB)")
    parser.add_argument("--long-limit", type=float, default=1.0, help="seconds a long input may take (default 1)")
    args = parser.parse_args()

    counts: dict[str, int] = defaultdict(int)
    spent: dict[str, float] = defaultdict(float)
    slowest: dict[str, tuple[float, int]] = defaultdict(lambda: (0.0, 0))
    failures: list[str] = []
    next_seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    start = time.monotonic()
    rounds = 0
    while time.monotonic() - start < args.seconds:
        done = counts["fetch"]
        if args.examples is not None and done >= args.examples:
            break
        examples = args.round if args.examples is None else min(args.round, args.examples - done)
        failure = fuzz_round(next_seed, examples, counts, spent, slowest)
        rounds += 1
        if failure is not None:
            failures.append(failure)
            print("FAILURE", failure, flush=True)
        next_seed += 1
        print(f"round {rounds}: {counts['fetch']} inputs, {time.monotonic() - start:.0f} s", flush=True)
    fuzz_seconds = time.monotonic() - start

    print(f"\nfuzzed for {fuzz_seconds:.0f} s, {rounds} rounds from seed {args.seed if args.seed is not None else 'random'}")
    print(f"{'parser':<14}{'inputs':>10}{'total s':>10}{'slowest ms':>12}{'its bytes':>11}")
    for name in fuzz.PARSERS:
        worst, size = slowest[name]
        print(f"{name:<14}{counts[name]:>10}{spent[name]:>10.2f}{worst * 1000:>12.2f}{size:>11}")

    long_start = time.monotonic()
    worst_long, long_failures = long_run(args.long_size, args.long_limit)
    inputs_per_parser = len(fuzz.long_inputs("fetch", 64, every_head=True))
    print(f"\nlong inputs: {inputs_per_parser} of ~{args.long_size} bytes per parser, "
          f"{time.monotonic() - long_start:.0f} s")
    for name, (elapsed, what) in worst_long.items():
        print(f"{name:<14} slowest {elapsed * 1000:8.1f} ms  {what}")
    failures += long_failures
    for failure in long_failures:
        print("FAILURE", failure)

    print(f"\n{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
