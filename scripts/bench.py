"""Benchmark the kit against the ideal and against the clients users would pick instead.

Starts the bundled mock (a subprocess on a free loopback port) for each scenario, runs every
contender in its own process, and writes ``results.json``, one PNG per scenario and
``results.md`` into ``--out``, then prints the tables and the issue-6 targets, met or missed.

    python scripts/bench.py --out bench-results            # the full run (make bench), ~15 min
    python scripts/bench.py --quick --out bench-results    # smaller, under 2 minutes
    python scripts/bench.py --tiny --out /tmp/b            # seconds: checks that it works
    python scripts/bench.py --scenarios seed,client_cost   # only some scenarios
    python scripts/bench.py --redraw docs/bench/results.json --out /tmp/b   # plots again

The design is in ``paradigm_kit/bench/__init__.py``. Exit status: 0 when every scenario ran
(targets missed or not: they are figures to report, not test results), 1 when one failed.
"""

from __future__ import annotations

import argparse
import sys

from paradigm_kit.bench.plan import PLANS
from paradigm_kit.bench.report import format_tables, format_targets
from paradigm_kit.bench.scenarios import SCENARIOS
from paradigm_kit.bench.suite import redraw, run_benchmarks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-results", help="folder for results.json and PNGs")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    size.add_argument("--tiny", action="store_true", help="a few requests each (for the tests)")
    size.add_argument(
        "--redraw",
        metavar="RESULTS_JSON",
        help="measure nothing: plots, tables and targets again from a saved results.json",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma list, in order (default: all): {','.join(SCENARIOS)}",
    )
    args = parser.parse_args(argv)
    args.scenario_names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in args.scenario_names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.redraw:
        results = redraw(args.redraw, args.out)
    else:
        plan = PLANS["tiny" if args.tiny else "quick" if args.quick else "full"]
        results = run_benchmarks(plan, args.out, args.scenario_names)
    print()
    print(format_tables(results))
    print()
    print(format_targets(results["targets"]))
    print(
        f"\nWrote {args.out}/results.json, results.md and {', '.join(results['plots'])}"
        f" (measuring took {results['duration_s']:.0f} s)."
    )
    failed = [name for name, scenario in results["scenarios"].items() if "error" in scenario]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
