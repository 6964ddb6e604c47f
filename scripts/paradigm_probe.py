"""Measure how much concurrency a server can use, and recommend a ``--concurrency``.

A thin CLI over ``paradigm_kit.batch.probe.probe_capacity`` (its docstring has the ladder and the
knee rule). Against a local mock the budget defaults to 200 requests; against any other host
(the real API, a private instance) ``--max-requests`` is required, and the plan and the estimated
tokens (and cost, with ``--price-per-1k-tokens``) are printed before anything is sent.

    python scripts/mock_paradigm.py --port 8001 --capacity 8 &   # or any OpenAI-compatible server
    python scripts/paradigm_probe.py --json probe.json --plot probe.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import urllib.parse
from pathlib import Path

from paradigm_kit.batch.probe import (
    DEFAULT_PROMPT,
    estimate_probe_tokens,
    plan_probe,
    probe_capacity,
)
from paradigm_kit.batch.runner import BatchConfigError
from paradigm_kit.settings import DEFAULT_MODEL, MissingApiKey, api_settings

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
LOCAL_DEFAULT_MAX_REQUESTS = 200


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paradigm_probe.py",
        description="Send a ladder of streamed requests (concurrency 1, 2, 4, ...) and "
        "recommend the smallest concurrency within 5%% of the highest throughput.",
        epilog="environment: PARADIGM_API_KEY (required, never printed), PARADIGM_BASE_URL. "
        "exit codes: 0 done, 2 usage or configuration error (nothing sent).",
    )
    add = parser.add_argument
    add(
        "--max-requests",
        type=int,
        default=None,
        help="requests to send at most (required unless the server is a local mock; default 200 there)",
    )
    add("--max-concurrency", type=int, default=256, help="highest level to try (default 256)")
    add("--model", default=DEFAULT_MODEL, help=f"model (default {DEFAULT_MODEL})")
    add("--prompt", default=DEFAULT_PROMPT, help="the prompt every request sends")
    add("--max-tokens", type=int, default=64, help="max_tokens of every request (default 64)")
    add("--price-per-1k-tokens", type=float, default=None, help="price, for the cost estimate")
    add("--json", metavar="FILE", default=None, help="write every level and the result as JSON")
    add(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="plot throughput and latency vs concurrency",
    )
    return parser


def _is_local(base_url: str) -> bool:
    return (urllib.parse.urlsplit(base_url).hostname or "") in LOCAL_HOSTS


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace, base_url: str) -> int:
    if args.max_requests is None:
        if not _is_local(base_url):
            parser.error(
                f"--max-requests is required against {base_url} (every request may be billed)"
            )
        args.max_requests = LOCAL_DEFAULT_MAX_REQUESTS
    if args.max_requests < 4:
        parser.error("--max-requests must be >= 4 (the first level sends 4)")
    if args.max_concurrency < 1:
        parser.error("--max-concurrency must be >= 1")
    if args.max_tokens < 1:
        parser.error("--max-tokens must be >= 1")
    if args.price_per_1k_tokens is not None and not (
        math.isfinite(args.price_per_1k_tokens) and args.price_per_1k_tokens >= 0
    ):
        parser.error("--price-per-1k-tokens must be a number >= 0")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path:  # checked before anything is sent: a paid probe must not end on a bad path
            _check_writable(parser, flag, Path(path))
    return args.max_requests


def _check_writable(parser: argparse.ArgumentParser, flag: str, path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        parser.error(f"{flag} {path} is a directory: give a file name")
    if not folder.is_dir():
        parser.error(f"{flag}: the folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        parser.error(f"{flag}: the folder {folder} is not writable")


def _print_plan(args: argparse.Namespace, base_url: str) -> None:
    plan = plan_probe(args.max_requests, args.max_concurrency)
    tokens = estimate_probe_tokens(args.max_requests, args.model, args.prompt, args.max_tokens)
    ladder = ", ".join(f"{c} ({n} req)" for c, n in plan)
    print(f"probe of {base_url}, model {args.model}")
    print(f"plan: at most {args.max_requests} streamed requests; ladder {ladder}; then refined")
    cost = ""
    if args.price_per_1k_tokens is not None:
        cost = f", at most {tokens / 1000 * args.price_per_1k_tokens:.4f} at the given price"
    print(f"estimate: at most {tokens} tokens (prompt characters / 4 + max_tokens){cost}")
    sys.stdout.flush()


def _plot(result, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted(result.levels, key=lambda level: level.concurrency)
    xs = [level.concurrency for level in levels]
    figure, throughput = plt.subplots(figsize=(7, 4))
    throughput.plot(xs, [lv.requests_per_s for lv in levels], "o-", color="tab:blue")
    throughput.set_xscale("log", base=2)
    throughput.set_xlabel("concurrency")
    throughput.set_ylabel("requests/s", color="tab:blue")
    latency = throughput.twinx()
    latency.plot(xs, [lv.p50_latency_s or 0 for lv in levels], "s--", color="tab:orange")
    latency.set_ylabel("p50 latency (s)", color="tab:orange")
    throughput.axvline(result.recommended, color="grey", linestyle=":")
    throughput.annotate(
        f"knee: {result.recommended}", (result.recommended, result.knee.requests_per_s)
    )
    figure.suptitle("Throughput and latency against concurrency")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = api_settings(require_key=True)
    except MissingApiKey as error:
        print(f"paradigm_probe.py: error: {error}", file=sys.stderr)
        return 2
    _check(parser, args, settings.base_url)
    _print_plan(args, settings.base_url)

    def on_level(level) -> None:
        print(
            f"  concurrency {level.concurrency}: {level.requests_per_s:.2f} req/s, "
            f"{level.errors} errors",
            flush=True,
        )

    try:
        result = asyncio.run(
            probe_capacity(
                settings.base_url,
                settings.api_key,
                max_requests=args.max_requests,
                max_concurrency=args.max_concurrency,
                model=args.model,
                prompt=args.prompt,
                max_tokens=args.max_tokens,
                on_level=on_level,
            )
        )
    except BatchConfigError as error:
        print(f"paradigm_probe.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("paradigm_probe.py: interrupted", file=sys.stderr)
        return 130
    print(result.table())
    top = max(level.concurrency for level in result.levels)
    if result.recommended == top:
        print(f"no plateau reached: the server may take more than {top} (raise --max-requests)")
    print(
        f"sent {result.requests_sent} of at most {result.max_requests} requests; "
        f"stopped: {result.stopped_because}"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result.to_json(), handle, indent=2)
    if args.plot:
        _plot(result, args.plot)
    print(result.recommendation_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
