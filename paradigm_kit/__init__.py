"""paradigm_kit: what the notebooks, scripts and tests of the kit share.

The ground floor, shared by everything above it (the mock imports nothing else of the client):

* ``settings``: where the API is (``PARADIGM_API_KEY``, ``PARADIGM_BASE_URL``), read nowhere else.
* ``ratelimit``: the token bucket both the mock and the runner use.
* ``tokens``: what a request costs in tokens, the one rule both sides count with.
* ``seed``: the seed's greeting prompt and names.
* ``retry``: which failures retry and how long to wait.
* ``timeline``: per-attempt records and the Gantt chart; ``lines``: the buffered line writer.

Above it:

* ``mock``: the bundled mock Paradigm server and ``running_mock()`` to start it as a subprocess.
* ``batch``: ``run_batch()``, the production runner.
* ``workshop``: what learners call from a notebook; ``bench``: the benchmarks behind the README.
"""

__version__ = "0.1.0"
