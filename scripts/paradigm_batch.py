"""Send a JSONL file of chat requests to Paradigm (or the bundled mock), one output line each.

A thin CLI over ``paradigm_kit.batch.run_batch``: argparse, then ``asyncio.run``. Run it with
``--help`` for the options and exit codes; the package docstring has the design.

    export PARADIGM_API_KEY=...            # PARADIGM_BASE_URL too, for the mock or a private host
    python scripts/paradigm_batch.py prompts.jsonl results.jsonl --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys

from paradigm_kit.batch import BatchConfigError, estimate_batch, run_batch
from paradigm_kit.batch.streaming import StreamDeadlines
from paradigm_kit.retry import RetryPolicy
from paradigm_kit.settings import DEFAULT_MODEL

EPILOG = """\
input:  one JSON object per line: {"id": ..., "messages": [...], "model": ..., other fields};
        "id" defaults to the 1-based line number, "model" to --model.
output: one line per input line, in completion order (--ordered: input order):
        {"id", "line", "attempts", "latency_s", "response": {...}} or {..., "error": {...}};
        streamed: also "ttft_s", "tokens_per_s" (and "usage_estimated", "stream_cuts" flags).
        Running again with the same OUTPUT skips every id already there and does the rest.

environment: PARADIGM_API_KEY (required, never printed), PARADIGM_BASE_URL
        (default https://paradigm.lighton.ai/api/v2).

refused up front (exit 2, one line on stderr, nothing sent or written): a number that is not
        positive and finite (leave a limit out for "no limit"), a bad URL or key, an OUTPUT that
        is the INPUT (however spelled or linked), a directory or unwritable, an existing OUTPUT
        that does not hold runner records (unless --overwrite), a line of OUTPUT other than a
        torn last one that is not a record, duplicate ids (a line without "id" has its line
        number as id), a request bigger than the whole --max-tokens-per-minute budget, a key
        refused by the server, an unreachable host, a non-API answer, no line naming a model
        the server serves. A 429, 5xx or timeout on the preflight is retried like a request.
        Lines naming a model the server does not serve get an error line and are not sent.

exit codes:
  0    every request succeeded
  1    some requests failed (the output is complete: their lines hold the errors; run again
       with --retry-failed to redo them)
  2    usage or configuration error (see above): nothing was sent or written
  130  interrupted by Ctrl-C (SIGINT), 143 by SIGTERM: in-flight requests finished and were
       written (a second signal cancels them); run the same command again to finish
"""


def _number(kind: type, minimum: float, strict: bool):
    """An argparse type: a finite ``kind`` above ``minimum`` (or equal, when not strict)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be a finite number {relation} {minimum:g}")
        return value

    parse.__name__ = kind.__name__
    return parse


positive_int = _number(int, 0, strict=True)
count_int = _number(int, 0, strict=False)
positive_float = _number(float, 0.0, strict=True)
non_negative_float = _number(float, 0.0, strict=False)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="paradigm_batch.py",
        description="Send chat requests from a JSONL file concurrently, with retries, rate "
        "limits and resume; write one JSON line per request.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("input", help="JSONL file of chat requests")
    add("output", help="JSONL file of results (appended to; resumed if it exists)")
    add(
        "--concurrency",
        type=_concurrency,
        default=20,
        help="requests in flight at most, or 'auto' to adapt to the server (default 20)",
    )
    add(
        "--max-concurrency",
        type=positive_int,
        default=256,
        help="with --concurrency auto: never more than this many in flight (default 256)",
    )
    # --- streaming (issue 13) ---
    add(
        "--stream", action="store_true", help='stream every request (as a line with "stream": true)'
    )
    add(
        "--connect-timeout",
        type=positive_float,
        default=10.0,
        help="streams: seconds to connect (default 10)",
    )
    add(
        "--first-token-timeout",
        type=positive_float,
        default=60.0,
        help="streams: seconds from sending to the first content chunk (default 60)",
    )
    add(
        "--idle-timeout",
        type=positive_float,
        default=30.0,
        help="streams: seconds of silence allowed between two chunks (default 30)",
    )
    add(
        "--stream-timeout",
        type=positive_float,
        default=600.0,
        help="streams: seconds for a whole streamed attempt (default 600)",
    )
    add(
        "--max-retries",
        type=count_int,
        default=6,
        help="retries per request after the first attempt (default 6)",
    )
    add(
        "--max-requests-per-minute",
        type=positive_float,
        default=None,
        help="client-side request limit (default: none, or learned from x-ratelimit-* headers)",
    )
    add(
        "--max-tokens-per-minute",
        type=positive_float,
        default=None,
        help="client-side token limit, estimated as prompt characters / 4 + max_tokens (default: none)",
    )
    add("--no-learn-limits", action="store_true", help="ignore x-ratelimit-* headers")
    add(
        "--timeout",
        type=positive_float,
        default=60.0,
        help="seconds per attempt, from when it is sent (default 60)",
    )
    add(
        "--max-retry-after",
        type=non_negative_float,
        default=120.0,
        help="fail a request whose Retry-After is longer than this many seconds (default 120)",
    )
    add(
        "--backoff-base",
        type=non_negative_float,
        default=0.5,
        help="first backoff in seconds, doubled each retry (default 0.5)",
    )
    add(
        "--backoff-max",
        type=non_negative_float,
        default=30.0,
        help="backoff cap in seconds (default 30)",
    )
    add(
        "--jitter",
        choices=("equal", "full"),
        default="equal",
        help="backoff jitter (default equal)",
    )
    add(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model for lines without one (default {DEFAULT_MODEL})",
    )
    add(
        "--retry-failed",
        action="store_true",
        help="retry only the ids whose output line is an error, rewriting the output atomically",
    )
    add(
        "--overwrite",
        action="store_true",
        help="empty an existing OUTPUT that does not hold runner records (never the INPUT)",
    )
    add("--ordered", action="store_true", help="sort the output in input order at the end")
    add("--timeline", metavar="FILE", default=None, help="write one JSON line per attempt to FILE")
    add(
        "--price-per-1k-tokens",
        type=non_negative_float,
        default=None,
        help="price for the cost in the summary",
    )
    add(
        "--dry-run",
        action="store_true",
        help="count requests, estimate tokens and cost, send nothing",
    )
    add("--no-progress", action="store_true", help="no progress bar")
    return parser


def _concurrency(text: str) -> int | str:
    """``--concurrency``: a whole number >= 1, or ``auto``."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number or 'auto', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1 (or 'auto')")
    return value


def _deadlines_and_policy(args: argparse.Namespace) -> tuple[StreamDeadlines, RetryPolicy]:
    """The stream deadlines and the retry policy the flags ask for (``ValueError`` if bad)."""
    deadlines = StreamDeadlines(
        connect_s=args.connect_timeout,
        first_token_s=args.first_token_timeout,
        idle_s=args.idle_timeout,
        total_s=args.stream_timeout,
    )
    policy = RetryPolicy(
        max_retries=args.max_retries,
        base_delay_s=args.backoff_base,
        max_delay_s=args.backoff_max,
        jitter=args.jitter,
        max_retry_after_s=args.max_retry_after,
    )
    return deadlines, policy


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_concurrency < 1:
        parser.error("--max-concurrency must be >= 1")
    try:
        deadlines, policy = _deadlines_and_policy(args)
    except ValueError as error:  # a value the flags' types accept but the run cannot use
        parser.error(str(error))
    try:
        if args.dry_run:
            print(
                estimate_batch(
                    args.input,
                    args.output,
                    model=args.model,
                    retry_failed=args.retry_failed,
                    price_per_1k_tokens=args.price_per_1k_tokens,
                )
            )
            return 0
        summary = asyncio.run(
            run_batch(
                args.input,
                args.output,
                concurrency=args.concurrency,
                max_concurrency=args.max_concurrency,
                stream=args.stream,
                stream_deadlines=deadlines,
                retry_policy=policy,
                timeout_s=args.timeout,
                max_requests_per_minute=args.max_requests_per_minute,
                max_tokens_per_minute=args.max_tokens_per_minute,
                learn_limits_from_headers=not args.no_learn_limits,
                model=args.model,
                retry_failed=args.retry_failed,
                ordered=args.ordered,
                timeline=args.timeline,
                price_per_1k_tokens=args.price_per_1k_tokens,
                progress=not args.no_progress,
                handle_signals=True,
                overwrite=args.overwrite,
            )
        )
    except BatchConfigError as error:
        print(f"paradigm_batch.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while the input was read, before any handler was set
        print("paradigm_batch.py: interrupted before sending anything", file=sys.stderr)
        return 130
    if summary.interrupted and not summary.requests and not summary.wall_s:
        name = signal.Signals(summary.stopped_by or signal.SIGINT).name
        print(f"paradigm_batch.py: {name}: stopped before sending anything", file=sys.stderr)
        return summary.exit_code
    print(summary)
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
