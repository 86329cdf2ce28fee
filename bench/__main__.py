"""`python -m bench` (`make bench`): run every benchmark, then rewrite docs/benchmarks.md.

python -m bench                 all of them (about 20 minutes on 2 cores)
python -m bench wait_lag rest   just these
python -m bench --report        only regenerate docs/benchmarks.md from bench/results/
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from bench import report

ORDER = [
    "wait_lag",
    "fanout",
    "rest",
    "lifecycle",
    "slow_consumer",
    "lifecycle_redis",
    "cross_lag",
    "kill_rounds",
    "media",
    "webhooks",
    "redis_stall",
]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(ORDER)} (default: all)")
    parser.add_argument("--report", action="store_true", help="only rewrite docs/benchmarks.md")
    args = parser.parse_args()
    unknown = set(args.names) - set(ORDER)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if not args.report:
        del sys.argv[1:]  # each result records its own command (its defaults), not these names
        for name in args.names or ORDER:
            started = time.monotonic()
            print(f"== bench.{name}", flush=True)
            importlib.import_module(f"bench.{name}").main([])
            print(f"== bench.{name}: {time.monotonic() - started:.0f} s", flush=True)
    report.main()


if __name__ == "__main__":
    main()
