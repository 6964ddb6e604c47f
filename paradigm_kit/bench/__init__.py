"""The kit's benchmarks (issue 6): its speed against the ideal and against what users pick instead.

Everything runs against the bundled mock on loopback, so the figures measure the clients and
concurrency itself, not a network or a real server (which change the absolute numbers). The
design, one concern a module:

* ``plan``: the sizes of each scenario in the ``full``, ``quick`` and ``tiny`` modes;
* ``contenders``: the same batch written with each client (bare aiohttp, the kit's runner,
  ``openai.AsyncOpenAI``, ``httpx.AsyncClient``, ``requests`` with and without a session, a thread
  pool), each reporting its wall time, per-request latencies, statuses and threads;
* ``child``: the contender's process: warm-up, then one timed run, figures as a JSON line;
* ``measure``: the parent's side: one process per timed run, its CPU and peak RSS from
  ``os.wait4``, a fresh API key per run so the mock's own stats isolate it;
* ``scenarios``: seed, scaling, variable latency, client cost, memory, rate limits, threads vs
  asyncio; each starts its mock, alternates the contenders over the repetitions, and reports
  medians with their spread beside the ideal;
* ``stats``: percentiles, median and spread; ``machine``: what the run was measured on;
* ``report``: the targets met or missed, the tables; ``plots``: one PNG per scenario;
* ``suite``: runs the scenarios and writes ``results.json``, the PNGs and ``results.md``.

Run it with ``python scripts/bench.py --out bench-results`` (``make bench``), ``--quick`` for a
two-minute version, ``--tiny`` for the few-second smoke run the tests use.
"""
