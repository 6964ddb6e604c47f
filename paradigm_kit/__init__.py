"""paradigm_kit: what the notebooks, scripts and tests of the kit share.

* ``settings``: where the API is (``PARADIGM_API_KEY``, ``PARADIGM_BASE_URL``).
* ``ratelimit``: the token bucket both the mock and the runner use.
* ``mock``: the bundled mock Paradigm server and ``running_mock()`` to start it as a subprocess.
* ``retry``: which failures retry and how long to wait.
* ``batch``: ``run_batch()``, the production runner.
"""

__version__ = "0.1.0"
