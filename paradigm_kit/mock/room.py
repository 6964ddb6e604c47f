"""The room view: ``GET /_mock/room``, a live page of every attendee's requests, and its feed.

A facilitator serving one mock to a workshop projects this page: one row per attendee (the
``X-Attendee`` header when the client sends one, which the kit does from ``PARADIGM_ATTENDEE``,
else the 12-character hash of the key: never a key), each with its counts (requests, in flight
now, peak in flight, 429s, retries that ignored ``Retry-After``) and a timeline of the last
minute, one bar per attempt from its start to its end, coloured by how it ended. Above them, the
server: requests/s, in flight, and, when the capacity model is on, running and queued.

The feed: polled JSON, not Server-Sent Events
---------------------------------------------
``GET /_mock/room/feed?since=SEQ`` answers the frames after ``SEQ``; the page asks every 250 ms.
Polling was chosen over an SSE stream (``/_mock/events``) because it keeps the mock stateless
towards its viewers: no long-lived response per viewer, no background task to start when the
first viewer comes and stop at shutdown (an open stream would hold the server's graceful
shutdown for its whole timeout), no proxy buffering an endless response, and a page that
reconnects by simply asking again. The price, four small GETs a second per viewer, is nothing
next to the attendees' thousands of chat requests.

Cost: once per tick, never per request, whoever is watching
------------------------------------------------------------
The chat handler's only extra work is the recorder's (``stats.py``): per attempt, a dict insert
and a journal append when it starts, a pop and an append when it ends, with or without a viewer.
Everything else happens here, lazily: the first poll after ``TICK_S`` computes a new frame (drain
the journal of starts and ends, place each new bar on a *track* of its attendee's lane so that
bars in flight together stack up and a bound shows as waves, serialise), and every other poll
in that tick, from any number of viewers, gets bytes already made. A frame carries only the bars
that ended since the previous one; the page keeps the minute itself. A viewer that is new, came
back after a while, or saw a reset gets a *full* frame: the last minute kept here (at most
``WINDOW_BARS`` bars, so a 100k-request bench does not grow memory or the page without bound).
No page open means no tick at all.

Frame (times in ms since the mock started or was reset)::

    {"seq": 12, "full": false, "t_ms": 48250,
     "server": {"rps": 412.5, "in_flight": 40, "peak_in_flight": 100, "total": 9120,
                "capacity": {"running": 8, "queued": 32, ...} | null},
     "attendees": [[name, requests, in_flight, peak, n429, early_retries], ...],
     "open":  [[attendee_index, track, t_start_ms], ...],                    started since SEQ
     "ended": [[attendee_index, track, t_start_ms, t_end_ms, kind], ...]}    ended since SEQ

A full frame's ``open`` is every attempt open now and its ``ended`` the last minute. The page
keeps the open bars by ``(attendee, track, t_start)`` and drops one when its end arrives, so a
tick costs the mock the attempts that started or ended in it, not the thousand still in flight.

The page takes ``?window=S`` to zoom on the last S seconds (5 to 60). ``kind``: 1 = 2xx, 2 = 429, 3 = 5xx, 4 = dropped or abandoned (444, 499), 5 = other 4xx.
"""

from __future__ import annotations

import json
import math
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .stats import STATUS_CLIENT_CLOSED, STATUS_DROPPED, Recorder

__all__ = ["ROOM", "Room", "attendee_of", "capacity_snapshot", "room_feed", "room_page"]

TICK_S = 0.2  # at most one new frame per tick; the page polls every 250 ms
WINDOW_S = 60.0  # the timeline's width
WINDOW_BARS = 20_000  # bars kept for a full frame, newest first kept
FRAMES_KEPT = 20  # a viewer at most this many frames behind gets deltas, else a full frame
MAX_TRACKS = 64  # per attendee lane: past this, concurrent bars share tracks
RATE_WINDOW_S = 2.0  # requests/s over the last two seconds of ticks
MAX_ATTENDEE_CHARS = 32
KIND_OK, KIND_429, KIND_5XX, KIND_DROPPED, KIND_4XX = 1, 2, 3, 4, 5
SEPARATORS = (",", ":")


def attendee_of(header: str | None, api_key: str) -> str:
    """The attendee's name from ``X-Attendee``: printable, at most 32 characters, never the key.

    "" (the key's hash will stand for the attendee) when there is no usable name.
    """
    if not header:
        return ""
    name = "".join(ch for ch in header if unicodedata.category(ch)[0] != "C").strip()
    name = name[:MAX_ATTENDEE_CHARS]
    if not name or (api_key and (name in api_key or api_key in name)):
        return ""  # a key pasted into PARADIGM_ATTENDEE by mistake is never shown
    return name


def _kind(status: int) -> int:
    if status < 300:
        return KIND_OK
    if status == 429:
        return KIND_429
    if status in (STATUS_DROPPED, STATUS_CLIENT_CLOSED):
        return KIND_DROPPED
    return KIND_5XX if status >= 500 else KIND_4XX


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=SEPARATORS).encode()


class Room:
    """The room's frames, made from the recorder once per tick; one per app (``app[ROOM]``).

    ``capacity`` returns the scheduler's ``snapshot()`` dict (running, queued, peaks, shed) or
    None when the capacity model is off; the page hides the row then.
    """

    def __init__(
        self,
        recorder: Recorder,
        capacity: Callable[[], dict | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._recorder = recorder
        self._capacity = capacity
        self._clock = clock
        self._t_tick = -math.inf
        self.seq = 0
        self._clear()

    def _clear(self) -> None:
        """Forget every bar (at start, and when the recorder was reset)."""
        recorder = self._recorder
        self._journal = recorder.journal  # a reset gives the recorder a new one
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._tracks: list[list[float]] = []  # per attendee: each track busy until (inf: open)
        self._track_of: dict[tuple, list] = {}  # open attempt -> [attendee, track, t_start_ms]
        self._window: deque[list] = deque(maxlen=WINDOW_BARS)  # ended bars, in end order
        self._deltas: deque[tuple[int, bytes, bytes]] = deque(maxlen=FRAMES_KEPT)
        self._base_seq = self.seq  # frames up to here describe a forgotten past
        self._rates: deque[tuple[float, int]] = deque()
        self._head = b""
        self._full = b""

    # --- one tick ----------------------------------------------------------------------------

    def _attendee(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            index = self._index[name] = len(self._names)
            self._names.append(name)
            self._tracks.append([])
        return index

    def _place(self, attendee: int, t_start: float) -> int:
        """The first track of the lane free at ``t_start`` (marked busy), else a new one."""
        tracks = self._tracks[attendee]
        for track, busy_until in enumerate(tracks):
            if busy_until <= t_start:
                tracks[track] = math.inf
                return track
        if len(tracks) < MAX_TRACKS:
            tracks.append(math.inf)
            return len(tracks) - 1
        track = min(range(MAX_TRACKS), key=tracks.__getitem__)  # share the least busy one
        tracks[track] = math.inf
        return track

    def _tick(self) -> None:
        """Drain the journal: place what started, close what ended; one delta frame."""
        recorder = self._recorder
        if recorder.journal is not self._journal:
            self._clear()
        journal = self._journal
        if len(journal) == journal.maxlen:  # it overflowed while nobody watched: start afresh
            self._rebuild_open()
        now_ms = round(recorder.now() * 1000)
        opened: dict[tuple, list] = {}  # started in this tick, in start order
        ended = []
        while journal:
            event = journal.popleft()
            if len(event) == 3:  # (attempt key, attendee, t_start): it started
                key, name, t_start = event
                opened[key] = self._open(key, name, t_start)
                continue
            key, name, t_start, t_end, status = event
            bar = self._track_of.pop(key, None) or opened.get(key)
            if bar is None:  # its start was dropped from a full journal
                bar = self._open(key, name, t_start)
                self._track_of.pop(key)
            opened.pop(key, None)
            self._tracks[bar[0]][bar[1]] = t_end
            ended.append([bar[0], bar[1], bar[2], round(t_end * 1000), _kind(status)])
        self._window.extend(ended)
        horizon_ms = now_ms - WINDOW_S * 1000
        while self._window and self._window[0][3] < horizon_ms:
            self._window.popleft()
        self.seq += 1
        self._deltas.append((self.seq, _dumps(list(opened.values()))[1:-1], _dumps(ended)[1:-1]))
        self._head = self._frame_head(now_ms)
        self._full = b""  # made on demand, at most once per tick

    def _open(self, key: tuple, name: str, t_start: float) -> list:
        """Place a started attempt on its lane: ``[attendee, track, t_start_ms]``."""
        index = self._attendee(name)
        bar = self._track_of[key] = [index, self._place(index, t_start), round(t_start * 1000)]
        return bar

    def _rebuild_open(self) -> None:
        """Forget the journal and take the open attempts from the recorder itself."""
        self._journal.clear()
        self._track_of.clear()
        self._tracks = [[] for _ in self._names]
        for key, (name, t_start) in self._recorder.open_attempts.items():
            self._open(key, name, t_start)
        self._base_seq = self.seq + 1  # every viewer needs a full frame now

    def _frame_head(self, now_ms: int) -> bytes:
        recorder = self._recorder
        now_s = now_ms / 1000
        self._rates.append((now_s, recorder.total))
        while len(self._rates) > 2 and now_s - self._rates[1][0] >= RATE_WINDOW_S:
            self._rates.popleft()
        t_then, total_then = self._rates[0]
        rps = (recorder.total - total_then) / (now_s - t_then) if now_s > t_then else 0.0
        attendees = []
        for name in self._names:
            person = recorder.attendees.get(name)
            if person is None:  # seen only in a bar from before a reset
                continue
            by_status = person.requests_by_status
            attendees.append(
                [
                    name,
                    person.total + person.in_flight,
                    person.in_flight,
                    person.peak_concurrency,
                    by_status.get(429, 0),
                    person.early_retries,
                ]
            )
        head = {
            "seq": self.seq,
            "t_ms": now_ms,
            "server": {
                "rps": round(rps, 1),
                "in_flight": recorder.in_flight,
                "peak_in_flight": recorder.peak_concurrency,
                "total": recorder.total,
                "capacity": self._capacity(),
            },
            "attendees": attendees,
        }
        return _dumps(head)[:-1]  # the closing brace comes after "full", "open" and "ended"

    # --- what a viewer gets --------------------------------------------------------------------

    def feed(self, since: int) -> bytes:
        """The frame for a viewer that has seen frames up to ``since`` (0: none)."""
        now_s = self._clock()
        if now_s - self._t_tick >= TICK_S or self._recorder.journal is not self._journal:
            self._t_tick = now_s
            self._tick()
        oldest_delta = self._deltas[0][0] if self._deltas else self.seq + 1
        if since <= self._base_seq or since + 1 < oldest_delta or since > self.seq:
            if not self._full:
                self._full = (
                    b',"full":true,"open":'
                    + _dumps(list(self._track_of.values()))
                    + b',"ended":'
                    + _dumps(list(self._window))
                    + b"}"
                )
            return self._head + self._full
        deltas = [delta for delta in self._deltas if delta[0] > since]
        opened = b",".join(delta[1] for delta in deltas if delta[1])
        ended = b",".join(delta[2] for delta in deltas if delta[2])
        return self._head + b',"full":false,"open":[' + opened + b'],"ended":[' + ended + b"]}"


ROOM = web.AppKey("room", Room)
CAPACITY_NAMES = ("scheduler", "capacity")


def capacity_snapshot(app: web.Application) -> dict | None:
    """The capacity model's ``snapshot()`` (running, queued, ...), or None when there is none.

    Read defensively, whatever holds the scheduler: an app key named like it, or a ``scheduler``
    or ``capacity`` attribute of an app's state object; anything without a ``running`` figure
    is not it.
    """
    for key, value in app.items():
        if getattr(value, "capacity_on", True) is False:  # the mock's state: the model is off
            continue
        holders = [getattr(value, name, None) for name in CAPACITY_NAMES]
        if any(name in str(getattr(key, "name", key)).lower() for name in CAPACITY_NAMES):
            holders.append(value)
        for holder in holders:
            snapshot = getattr(holder, "snapshot", None)
            if callable(snapshot):
                figures = snapshot()
                if isinstance(figures, dict) and "running" in figures:
                    return figures
    return None


async def room_page(request: web.Request) -> web.Response:
    return web.Response(
        text=PAGE, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-cache"}
    )


async def room_feed(request: web.Request) -> web.Response:
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        since = 0
    return web.Response(
        body=request.app[ROOM].feed(since),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


# The page: no network but its own feed, no library; plain DOM for the counts, one canvas per lane.
PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>The room: Paradigm mock</title>
<style>
:root { --bg:#111418; --fg:#e8eaed; --dim:#9aa0a6; --line:#2a2f36;
  --open:#8ab4f8; --ok:#34a853; --r429:#f9ab00; --r5xx:#ea4335; --drop:#b36bff; --r4xx:#a1887f; }
* { box-sizing:border-box; }
body { margin:0; padding:1.2vw 1.6vw; background:var(--bg); color:var(--fg);
  font:clamp(13px,1.05vw,22px)/1.3 system-ui,-apple-system,"Segoe UI",sans-serif; }
h1 { font-size:1.5em; margin:0 0 .5em; font-weight:600; }
h1 small { color:var(--dim); font-weight:400; font-size:.6em; margin-left:.8em; }
.server { display:flex; gap:1.2em; flex-wrap:wrap; margin-bottom:.8em; }
.card { background:#1b1f24; border:1px solid var(--line); border-radius:8px; padding:.35em .9em; }
.card b { display:block; font-size:1.7em; font-variant-numeric:tabular-nums; }
.card span { color:var(--dim); font-size:.85em; }
.legend { display:flex; gap:1.1em; color:var(--dim); font-size:.85em; margin:.3em 0 .6em; }
.legend i { display:inline-block; width:1.4em; height:.6em; margin-right:.35em; border-radius:2px; }
table { width:100%; border-collapse:collapse; table-layout:fixed; }
th { color:var(--dim); font-weight:400; font-size:.85em; text-align:right; padding:.2em .5em; }
th.name, td.name { text-align:left; }
td { padding:.15em .5em; border-top:1px solid var(--line); text-align:right;
  font-variant-numeric:tabular-nums; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
td.name { font-weight:600; } td.lane { padding:.15em 0; }
td.hot { color:var(--r429); font-weight:600; }
canvas { display:block; width:100%; height:var(--lane,44px); }
.axis { display:flex; justify-content:space-between; color:var(--dim); font-size:.8em; }
#empty { color:var(--dim); padding:1em 0; }
</style></head><body>
<h1>The room <small id="status">connecting&hellip;</small></h1>
<div class="server">
  <div class="card"><b id="s-rps">0</b><span>requests/s</span></div>
  <div class="card"><b id="s-in_flight">0</b><span>in flight</span></div>
  <div class="card"><b id="s-peak_in_flight">0</b><span>peak in flight</span></div>
  <div class="card"><b id="s-total">0</b><span>answered</span></div>
  <div class="card cap" hidden><b id="s-running">0</b><span>running</span></div>
  <div class="card cap" hidden><b id="s-queued">0</b><span>queued</span></div>
  <div class="card cap" hidden><b id="s-shed">0</b><span>shed (503)</span></div>
</div>
<div class="legend"><span><i style="background:var(--open)"></i>in flight</span>
<span><i style="background:var(--ok)"></i>200</span><span><i style="background:var(--r429)"></i>429</span>
<span><i style="background:var(--r5xx)"></i>5xx</span><span><i style="background:var(--drop)"></i>dropped</span>
<span><i style="background:var(--r4xx)"></i>other 4xx</span></div>
<table><colgroup><col style="width:13%"><col style="width:7%"><col style="width:6%">
<col style="width:6%"><col style="width:5%"><col style="width:8%"><col></colgroup>
<thead><tr><th class="name">attendee</th><th>requests</th><th>in flight</th><th>peak</th>
<th>429</th><th title="retries sent before Retry-After">early retries</th>
<th><div class="axis"><span id="ax-0">&minus;60 s</span><span id="ax-1">&minus;30 s</span><span>now</span></div></th></tr></thead>
<tbody id="rows"></tbody></table>
<div id="empty">No requests yet. Attendees: export PARADIGM_BASE_URL (this mock) and
PARADIGM_ATTENDEE=&lt;your name&gt;, then run.</div>
<script>
"use strict";
// ?window=S zooms the timeline on the last S seconds (at most the 60 the feed keeps)
const asked = Number(new URLSearchParams(location.search).get("window")) || 60;
const WINDOW_MS = 1000 * Math.min(60, Math.max(5, asked)), POLL_MS = 250, KEEP = 20000;
document.getElementById("ax-0").textContent = "\u2212" + WINDOW_MS / 1000 + " s";
document.getElementById("ax-1").textContent = "\u2212" + WINDOW_MS / 2000 + " s";
const COLOURS = {}; const css = getComputedStyle(document.documentElement);
["open","ok","r429","r5xx","drop","r4xx"].forEach(n => COLOURS[n] = css.getPropertyValue("--" + n).trim());
const KIND = [null, "ok", "r429", "r5xx", "drop", "r4xx"];
// window.room: the page's state, read by the browser test
const room = window.room = { seq: 0, t_ms: 0, attendees: [], open: [], ended: [], frames: 0,
  endedSeen: 0, openSeen: 0 };
const rows = new Map();  // attendee index -> {tr, cells, canvas}
const openBars = new Map();  // "attendee,track,t_start" -> bar in flight

function row(i, name) {
  let r = rows.get(i);
  if (r) return r;
  const tr = document.createElement("tr");
  tr.dataset.attendee = name;
  const cells = {};
  for (const f of ["name", "requests", "in_flight", "peak", "n429", "early"]) {
    const td = document.createElement("td");
    td.className = f === "name" ? "name" : "";
    td.dataset.field = f;
    tr.appendChild(td); cells[f] = td;
  }
  cells.name.textContent = name; cells.name.title = name;
  const lane = document.createElement("td"); lane.className = "lane";
  const canvas = document.createElement("canvas"); lane.appendChild(canvas); tr.appendChild(lane);
  document.getElementById("rows").appendChild(tr);
  r = { tr, cells, canvas }; rows.set(i, r); return r;
}

function apply(frame) {
  if (frame.full) {
    room.ended = []; openBars.clear(); rows.clear(); document.getElementById("rows").replaceChildren();
  }
  room.seq = frame.seq; room.t_ms = frame.t_ms; room.frames += 1;
  room.attendees = frame.attendees;
  // open bars by attendee, track and start: the feed sends each once, and its end later
  for (const bar of frame.open) openBars.set(bar.join(","), bar);
  for (const bar of frame.ended) { openBars.delete(bar.slice(0, 3).join(",")); room.ended.push(bar); }
  room.open = [...openBars.values()];
  room.openSeen += frame.open.length;
  room.endedSeen += frame.ended.length;
  const horizon = frame.t_ms - WINDOW_MS;
  let cut = 0;
  while (cut < room.ended.length && (room.ended[cut][3] < horizon || room.ended.length - cut > KEEP)) cut++;
  if (cut) room.ended.splice(0, cut);
  const s = frame.server;
  for (const k of ["rps", "in_flight", "peak_in_flight", "total"])
    document.getElementById("s-" + k).textContent = s[k];
  const cap = s.capacity;
  document.querySelectorAll(".cap").forEach(e => e.hidden = !cap);
  if (cap) for (const k of ["running", "queued", "shed"])
    document.getElementById("s-" + k).textContent = cap[k] ?? "-";
  document.getElementById("empty").hidden = frame.attendees.length > 0;
  frame.attendees.forEach((a, i) => {
    const r = row(i, a[0]);
    const values = { requests: a[1], in_flight: a[2], peak: a[3], n429: a[4], early: a[5] };
    for (const f in values) r.cells[f].textContent = values[f];
    r.cells.n429.classList.toggle("hot", a[4] > 0);
    r.cells.early.classList.toggle("hot", a[5] > 0);
  });
  const lane = Math.max(18, Math.min(64, Math.floor((innerHeight * 0.72) / Math.max(1, rows.size))));
  document.documentElement.style.setProperty("--lane", lane + "px");
  requestAnimationFrame(draw);
}

function draw() {
  const now = room.t_ms, x0 = now - WINDOW_MS;
  const byLane = new Map();
  const tracks = new Map();
  const add = (bar, end, colour) => {
    if (!byLane.has(bar[0])) byLane.set(bar[0], []);
    byLane.get(bar[0]).push([bar[1], bar[2], end, colour]);
    tracks.set(bar[0], Math.max(tracks.get(bar[0]) || 1, bar[1] + 1));
  };
  for (const b of room.ended) if (b[3] >= x0) add(b, b[3], COLOURS[KIND[b[4]]]);
  for (const b of room.open) add(b, now, COLOURS.open);
  for (const [i, r] of rows) {
    const c = r.canvas, dpr = devicePixelRatio || 1;
    const w = Math.round(c.clientWidth * dpr), h = Math.round(c.clientHeight * dpr);
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    g.fillStyle = "#1b1f24"; g.fillRect(0, 0, w, h);
    const n = tracks.get(i) || 1, th = h / n, bh = Math.max(1, th * 0.8);
    for (const [track, start, end, colour] of byLane.get(i) || []) {
      const xs = Math.max(0, (start - x0) / WINDOW_MS * w), xe = (end - x0) / WINDOW_MS * w;
      g.fillStyle = colour;
      g.fillRect(xs, track * th, Math.max(1.5 * dpr, xe - xs - dpr), bh);  // 1 px gap: retries show apart
    }
  }
}

async function poll() {
  const started = performance.now();
  try {
    const response = await fetch("/_mock/room/feed?since=" + room.seq, { cache: "no-store" });
    apply(await response.json());
    document.getElementById("status").textContent = "live, " + new Date().toLocaleTimeString();
  } catch (error) {
    document.getElementById("status").textContent = "mock unreachable, retrying";
  }
  // every POLL_MS from start to start: a slow answer (a busy mock) does not add its delay to the wait
  setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
}
addEventListener("resize", () => requestAnimationFrame(draw));
poll();
</script></body></html>
"""
