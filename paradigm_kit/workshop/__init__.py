"""What a learner calls from a notebook: the connection, the exercises' checks, the doctor, timelines.

* ``connect`` / ``local_mock`` / ``versions`` (``workshop.connect``): where a notebook sends its
  requests (the real API with a key, else the bundled mock) and the banner of versions in use.
* ``exercises``: each exercise's self-check, reading what the mock really saw.
* ``doctor``: the attendee's preflight (``make doctor``).
* ``track`` (``workshop.track``): time a notebook's own requests into a timeline.

Production code (``batch``, ``retry``, ``ratelimit``) never imports from here.
"""

from .connect import Connection, connect, local_mock, versions
from .track import track

__all__ = ["Connection", "connect", "local_mock", "track", "versions"]
