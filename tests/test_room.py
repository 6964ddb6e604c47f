"""The room view (``/_mock/room``): its feed, the facilitator token, and the page in a browser.

The fast tests serve ``create_app`` in-process and read the feed as JSON: who is named how, that
no key is ever in it, deltas against full frames, the capacity row read defensively, and the
token off loopback. The browser tests (marked ``browser``) start a real mock, open the page in
Debian's Chromium through Playwright, run attendees' batches with ``scripts/paradigm_batch.py``
and watch the page's own state (``window.room``) and its table; one saves a screenshot under
``tmp_path``, or over the README's ``docs/room.png`` with ``KIT_SAVE_ROOM_SCREENSHOT=1``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from paradigm_kit.mock import MockConfig, create_app
from paradigm_kit.mock.auth import FACILITATOR_TOKEN, TOKEN_HEADER
from paradigm_kit.mock.room import attendee_of, capacity_snapshot
from paradigm_kit.mock.stats import key_hash

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "paradigm_batch.py"
SECRET_KEY = "sk-room-test-0123456789abcdef"
OTHER_KEY = "sk-room-test-other-key-98765"
CHAT = {"model": "alfred-4.2", "messages": [{"role": "user", "content": "Hello"}]}


def serve(scenario, **config_fields):
    """Run ``scenario(session, root_url, app)`` against ``create_app(MockConfig(...))``."""
    config_fields.setdefault("latency_s", 0.0)
    app = create_app(MockConfig(**config_fields))

    async def main():
        async with TestServer(app) as server, aiohttp.ClientSession() as session:
            return await scenario(session, str(server.make_url("/")), app)

    return asyncio.run(main())


async def chat(session, root, key, attendee=None, content="Hello"):
    headers = {"Authorization": f"Bearer {key}"}
    if attendee is not None:
        headers["X-Attendee"] = attendee
    body = {**CHAT, "messages": [{"role": "user", "content": content}]}
    async with session.post(f"{root}api/v2/chat/completions", json=body, headers=headers) as r:
        await r.read()
        return r.status


async def feed(session, root, since=0):
    async with session.get(f"{root}_mock/room/feed", params={"since": since}) as response:
        assert response.status == 200
        return await response.text()


# --- naming ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("alice", "alice", id="a-name-is-kept"),
        pytest.param("  bob \t", "bob", id="spaces-trimmed"),
        pytest.param("eve\x1b[31m\n", "eve[31m", id="control-characters-dropped"),
        pytest.param("x" * 50, "x" * 32, id="at-most-32-characters"),
        pytest.param(None, "", id="no-header-no-name"),
        pytest.param("   ", "", id="blank-no-name"),
        pytest.param(SECRET_KEY, "", id="the-key-is-never-a-name"),
        pytest.param(SECRET_KEY[:20], "", id="part-of-the-key-is-never-a-name"),
    ],
)
def test_attendee_of_names_rules(header, expected):
    """An attendee's name is the printable, trimmed X-Attendee header, never (part of) the key."""
    assert attendee_of(header, SECRET_KEY) == expected


# --- the feed -------------------------------------------------------------------------------


def test_feed_names_attendees_by_header_else_key_hash_and_never_shows_a_key():
    """Named attendees by X-Attendee, others by their key's 12-character hash; no key anywhere."""

    async def scenario(session, root, app):
        for i in range(3):
            assert await chat(session, root, SECRET_KEY, "alice", f"hi {i}") == 200
        assert await chat(session, root, OTHER_KEY, None) == 200
        text = await feed(session, root)
        async with session.get(f"{root}_mock/room") as page:
            html = await page.text()
        return text, html

    text, html = serve(scenario)
    frame = json.loads(text)
    assert frame["full"] is True
    assert {a[0]: a[1] for a in frame["attendees"]} == {"alice": 3, key_hash(OTHER_KEY): 1}
    assert len(frame["ended"]) == 4
    assert frame["open"] == []
    for secret in (SECRET_KEY, OTHER_KEY):
        assert secret not in text
        assert secret not in html
    assert "http://" not in html and "https://" not in html  # self-contained: no CDN, no network


def test_feed_sends_deltas_to_a_viewer_in_step_and_a_full_frame_after_reset():
    """A viewer in step gets only the bars that ended since; after a reset, a full (empty) frame."""

    async def scenario(session, root, app):
        await chat(session, root, SECRET_KEY, "alice", "one")
        first = json.loads(await feed(session, root))
        await asyncio.sleep(0.25)  # the next tick (the feed makes at most one frame per 0.2 s)
        await chat(session, root, SECRET_KEY, "alice", "two")
        delta = json.loads(await feed(session, root, first["seq"]))
        await asyncio.sleep(0.25)
        async with session.post(f"{root}_mock/reset") as response:
            assert response.status == 200
        after_reset = json.loads(await feed(session, root, delta["seq"]))
        return first, delta, after_reset

    first, delta, after_reset = serve(scenario)
    assert (len(first["ended"]), first["full"]) == (1, True)
    assert (len(delta["ended"]), delta["full"]) == (1, False)
    assert delta["seq"] > first["seq"]
    assert delta["attendees"][0][:2] == ["alice", 2]
    assert (after_reset["full"], after_reset["ended"], after_reset["attendees"]) == (True, [], [])


def test_feed_stacks_concurrent_attempts_on_separate_tracks():
    """Attempts in flight together get tracks 0, 1, 2 of their lane; sequential ones reuse 0."""

    async def scenario(session, root, app):
        await asyncio.gather(*(chat(session, root, SECRET_KEY, "bob", f"c{i}") for i in range(3)))
        return json.loads(await feed(session, root))

    frame = serve(scenario, latency_s=0.3)
    assert sorted(bar[1] for bar in frame["ended"]) == [0, 1, 2]
    assert {bar[4] for bar in frame["ended"]} == {1}  # all 200


def test_feed_sends_each_open_bar_once_then_its_end():
    """Bars in flight come in a full frame's ``open``; the next delta repeats none, and ends them."""

    async def scenario(session, root, app):
        calls = asyncio.gather(
            *(chat(session, root, SECRET_KEY, "erin", f"o{i}") for i in range(2))
        )
        await asyncio.sleep(0.3)  # both in flight (latency 1 s)
        during = json.loads(await feed(session, root))
        await calls
        await asyncio.sleep(0.25)
        after = json.loads(await feed(session, root, during["seq"]))
        return during, after

    during, after = serve(scenario, latency_s=1.0)
    assert (len(during["open"]), during["ended"]) == (2, [])
    assert after["open"] == []
    assert sorted(bar[:3] for bar in after["ended"]) == sorted(during["open"])


def test_feed_kinds_show_429s_under_a_rate_limit():
    """A rate-limited 429 is a kind-2 bar and counts in the attendee's 429 column."""

    async def scenario(session, root, app):
        statuses = [await chat(session, root, SECRET_KEY, "carol", f"r{i}") for i in range(5)]
        return statuses, json.loads(await feed(session, root))

    statuses, frame = serve(scenario, rpm=2)
    assert frame["attendees"][0][4] == statuses.count(429)
    assert sorted(bar[4] for bar in frame["ended"]).count(2) == statuses.count(429)
    assert statuses.count(429) >= 1


class _FakeScheduler:
    def snapshot(self):
        return {"running": 3, "queued": 7, "peak_running": 4, "peak_queued": 9, "shed": 1}


class _StateWithScheduler:
    scheduler = _FakeScheduler()


def test_capacity_row_read_from_a_scheduler_snapshot_else_hidden():
    """The server row carries the scheduler's snapshot when there is one, else null."""
    app = create_app(MockConfig(latency_s=0.0))
    assert capacity_snapshot(app) is None
    with_scheduler = create_app(MockConfig(latency_s=0.0))
    from aiohttp import web

    with_scheduler[web.AppKey("capacity_state", object)] = _StateWithScheduler()
    assert capacity_snapshot(with_scheduler)["queued"] == 7
    with_capacity = create_app(MockConfig(latency_s=0.0, capacity=2.0))
    assert capacity_snapshot(with_capacity)["running"] == 0


# --- the facilitator token ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "token_needed"),
    [
        pytest.param("127.0.0.1", False, id="loopback-no-token"),
        pytest.param("localhost", False, id="localhost-no-token"),
        pytest.param("0.0.0.0", True, id="all-interfaces-token"),
        pytest.param("192.168.1.20", True, id="lan-address-token"),
    ],
)
def test_facilitator_token_only_off_loopback(host, token_needed):
    """A mock listening off loopback gets a random token; on loopback none is made."""
    assert bool(create_app(MockConfig(host=host))[FACILITATOR_TOKEN]) is token_needed


def test_reset_needs_the_token_off_loopback_read_only_views_do_not():
    """Off loopback: reset without the token is a JSON 403; with it, 200; the views are open."""

    async def scenario(session, root, app):
        token = app[FACILITATOR_TOKEN]
        async with session.post(f"{root}_mock/reset") as refused:
            refused_body = await refused.json()
            refused_status = refused.status
        async with session.post(f"{root}_mock/reset", headers={TOKEN_HEADER: "wrong"}) as wrong:
            wrong_status = wrong.status
        async with session.post(f"{root}_mock/reset", headers={TOKEN_HEADER: token}) as allowed:
            allowed_status = allowed.status
        views = []
        for path in ("_mock/room", "_mock/room/feed", "_mock/stats", "_mock/report"):
            async with session.get(f"{root}{path}") as response:
                views.append(response.status)
        return refused_status, refused_body, wrong_status, allowed_status, views

    refused_status, body, wrong_status, allowed_status, views = serve(scenario, host="0.0.0.0")
    assert (refused_status, wrong_status, allowed_status) == (403, 403, 200)
    assert body["error"]["code"] == "facilitator_token_required"
    assert TOKEN_HEADER in body["error"]["message"]
    assert views == [200, 200, 200, 200]


# --- in a real browser ----------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "room.png"  # rewritten only with KIT_SAVE_ROOM_SCREENSHOT=1
PAGE_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium page factory, or a skip (a failure under CI) saying how to install."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not Path(CHROMIUM).exists():
        message = "needs playwright and /usr/bin/chromium (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _write_input(path: Path, n: int, tag: str) -> Path:
    lines = [
        json.dumps(
            {
                "id": f"{tag}{i}",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": f"Hi {tag} {i}"}],
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _start_batch(tmp_path, base_url, key, attendee, n, concurrency, max_retries=3):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARADIGM_")}
    env.update(PARADIGM_BASE_URL=base_url, PARADIGM_API_KEY=key)
    if attendee:
        env["PARADIGM_ATTENDEE"] = attendee
    tag = attendee or "anon"
    command = [
        sys.executable,
        "-W",
        "error",
        str(SCRIPT),
        str(_write_input(tmp_path / f"{tag}.jsonl", n, tag)),
        str(tmp_path / f"{tag}.out.jsonl"),
        "--concurrency",
        str(concurrency),
        "--max-retries",
        str(max_retries),
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _row(page, name):
    """The attendee's counts as the page shows them (ints), or None while there is no row."""
    return page.evaluate(
        """name => {
          const tr = [...document.querySelectorAll('#rows tr')].find(t => t.dataset.attendee === name);
          if (!tr) return null;
          const out = {};
          tr.querySelectorAll('td[data-field]').forEach(td => out[td.dataset.field] = td.textContent);
          return out;
        }""",
        name,
    )


@pytest.mark.browser
def test_room_page_shows_attendees_counts_and_bars_live(chromium, tmp_path):
    """Two named attendees (one bounded, one not) and one unnamed: rows, rising counts, bars."""
    from paradigm_kit.mock import running_mock

    with running_mock(latency_s=0.8, jitter_s=0.4, seed=3) as base_url:
        root = base_url.rsplit("/api/v2", 1)[0]
        page = chromium.new_page(viewport={"width": 1920, "height": 1080})
        page.goto(f"{root}/_mock/room?window=20", timeout=PAGE_TIMEOUT_MS)
        page.wait_for_function("window.room && window.room.frames > 0", timeout=PAGE_TIMEOUT_MS)
        batches = [
            _start_batch(tmp_path, base_url, SECRET_KEY, "alice (bounded: 4)", 60, 4),
            _start_batch(tmp_path, base_url, OTHER_KEY, "bob (unbounded)", 60, 60),
            _start_batch(tmp_path, base_url, "sk-room-third-key-5555", "", 30, 8),
        ]
        page.wait_for_function(
            "window.room.attendees.length === 3 && window.room.open.length > 0",
            timeout=PAGE_TIMEOUT_MS,
        )
        first = int(_row(page, "alice (bounded: 4)")["requests"])
        page.wait_for_function(
            f"""() => {{ const a = window.room.attendees.find(a => a[0].startsWith('alice'));
                return a && a[1] > {first}; }}""",
            timeout=PAGE_TIMEOUT_MS,
        )
        page.wait_for_timeout(6000)  # a few seconds of waves for the screenshot
        save_to_docs = os.environ.get("KIT_SAVE_ROOM_SCREENSHOT") == "1"
        screenshot = DOCS_SCREENSHOT if save_to_docs else tmp_path / "room.png"
        page.screenshot(path=str(screenshot))
        for batch in batches:
            _, stderr = batch.communicate(timeout=120)
            assert batch.returncode == 0, stderr.decode()[-500:]
        page.wait_for_function(
            "window.room.open.length === 0 && window.room.ended.length >= 150",
            timeout=PAGE_TIMEOUT_MS,
        )
        alice, bob = _row(page, "alice (bounded: 4)"), _row(page, "bob (unbounded)")
        unnamed = _row(page, key_hash("sk-room-third-key-5555"))
        assert (alice["requests"], alice["in_flight"], alice["peak"]) == ("60", "0", "4")
        assert (bob["requests"], bob["in_flight"]) == ("60", "0")
        assert int(bob["peak"]) > 4
        assert unnamed["requests"] == "30"
        assert page.evaluate("window.room.openSeen") > 0  # bars were seen in flight, then ended
        html = page.content()
        for secret in (SECRET_KEY, OTHER_KEY):
            assert secret not in html
        print(f"screenshot: {screenshot}")


@pytest.mark.browser
def test_room_page_shows_429s_under_rpm(chromium, tmp_path):
    """With --rpm, an attendee firing all at once (a bare gather) sees its 429 column fill.

    (The kit's runner learns the limit from the headers and paces itself: no 429 to show.)
    """
    from paradigm_kit.mock import running_mock

    async def gather_all(root):
        async with aiohttp.ClientSession() as session:
            calls = (chat(session, root, SECRET_KEY, "dave", f"d{i}") for i in range(20))
            return await asyncio.gather(*calls)

    with running_mock(latency_s=0.2, rpm=30) as base_url:
        root = base_url.rsplit("/api/v2", 1)[0]
        page = chromium.new_page(viewport={"width": 1366, "height": 768})
        page.goto(f"{root}/_mock/room", timeout=PAGE_TIMEOUT_MS)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright's loop owns this thread
            statuses = pool.submit(lambda: asyncio.run(gather_all(root + "/"))).result(timeout=120)
        assert 429 in statuses
        page.wait_for_function(
            """() => { const a = window.room.attendees.find(a => a[0] === 'dave');
                return a && a[4] > 0 && window.room.open.length === 0; }""",
            timeout=PAGE_TIMEOUT_MS,
        )
        assert int(_row(page, "dave")["n429"]) > 0
        assert page.evaluate("window.room.ended.filter(b => b[4] === 2).length") > 0


# --- the clients' side ----------------------------------------------------------------------


def test_clients_send_paradigm_attendee_as_x_attendee(monkeypatch):
    """With PARADIGM_ATTENDEE set, the settings' and a notebook connection's headers name you."""
    from paradigm_kit.settings import api_settings
    from paradigm_kit.workshop.connect import Connection

    monkeypatch.setenv("PARADIGM_API_KEY", SECRET_KEY)
    monkeypatch.setenv("PARADIGM_ATTENDEE", "  alice ")
    connection = Connection(base_url="http://127.0.0.1:1/api/v2", api_key=SECRET_KEY)
    assert api_settings().headers["X-Attendee"] == "alice"
    assert connection.headers()["X-Attendee"] == "alice"
    monkeypatch.delenv("PARADIGM_ATTENDEE")
    assert "X-Attendee" not in api_settings().headers
    assert "X-Attendee" not in connection.headers()
