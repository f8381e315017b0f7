"""The hub's line of server starts (hub_config/spawn_line.py) and what the spawn page says about
it (hub_config/spawn_progress.py), with a fake clock and fake starts on a real event loop."""

from __future__ import annotations

import asyncio
import os
import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from hardware_kits.descriptor import DescriptorError
from hub_config import spawn_line, spawn_progress
from hub_config.spawn_line import SpawnLine
from hub_config.spawner import SiteSpawner
from site_config.paths import DEMO_SITE
from site_config.site import load_site

HUB_CONFIG = Path(spawn_line.__file__).resolve().parent / "jupyterhub_config.py"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    """Let every task that can run, run (the line hands turns over through futures)."""
    for _ in range(10):
        await asyncio.sleep(0)


class Starts:
    """Fake starts: each holds a place until the test lets it finish (or fail)."""

    def __init__(self, line: SpawnLine) -> None:
        self.line = line
        self.began: list[str] = []
        self.done: dict[str, asyncio.Future[None]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def ask(self, name: str) -> None:
        self.done[name] = asyncio.get_running_loop().create_future()
        self.tasks[name] = asyncio.create_task(self._start(name))

    async def _start(self, name: str) -> None:
        async with self.line.place(name):
            self.began.append(name)
            await self.done[name]

    async def finish(self, name: str, error: BaseException | None = None) -> None:
        if error is None:
            self.done[name].set_result(None)
        else:
            self.done[name].set_exception(error)
        await settle()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_starts_go_in_the_order_asked_at_most_k_at_once() -> None:
    async def scenario() -> None:
        line = SpawnLine(2, Clock())
        starts = Starts(line)
        for name in "abcdef":
            starts.ask(name)
        await settle()
        assert starts.began == ["a", "b"]  # two slots: the rest wait
        await starts.finish("b")
        assert starts.began == ["a", "b", "c"]
        await starts.finish("a")
        await starts.finish("c")
        assert starts.began == ["a", "b", "c", "d", "e"]
        await starts.finish("e")
        await starts.finish("d")
        await starts.finish("f")
        assert starts.began == list("abcdef")
        assert [line.standing(n) for n in "abcdef"] == [None] * 6

    run(scenario())


def test_a_late_comer_never_overtakes_those_waiting() -> None:
    async def scenario() -> None:
        line = SpawnLine(1, Clock())
        starts = Starts(line)
        for name in "abc":
            starts.ask(name)
        await settle()
        await starts.finish("a")  # b's turn is handed over ...
        starts.ask("z")  # ... and z, coming now, queues behind c
        await settle()
        await starts.finish("b")
        await starts.finish("c")
        await starts.finish("z")
        assert starts.began == ["a", "b", "c", "z"]

    run(scenario())


def test_a_failed_start_gives_its_place_to_the_next() -> None:
    async def scenario() -> None:
        line = SpawnLine(1, Clock())
        starts = Starts(line)
        for name in "abc":
            starts.ask(name)
        await settle()
        await starts.finish("a", RuntimeError("the server did not start"))
        assert starts.began == ["a", "b"]
        assert isinstance(starts.tasks["a"].exception(), RuntimeError)
        await starts.finish("b", TimeoutError())  # JupyterHub's start_timeout, say
        assert starts.began == ["a", "b", "c"]
        assert isinstance(starts.tasks["b"].exception(), TimeoutError)
        assert line.average() is None  # failures are not measured as starts

    run(scenario())


def test_cancelled_starts_give_their_place_back_waiting_or_starting() -> None:
    async def scenario() -> None:
        line = SpawnLine(1, Clock())
        starts = Starts(line)
        for name in "abcd":
            starts.ask(name)
        await settle()
        starts.tasks["c"].cancel()  # waiting: leaves the line
        await settle()
        assert line.standing("d").ahead == 1  # behind b only
        starts.tasks["a"].cancel()  # starting (stopped from the spawn page): its slot frees
        await settle()
        assert starts.began == ["a", "b"]
        await starts.finish("b")
        assert starts.began == ["a", "b", "d"]

    run(scenario())


def test_a_turn_given_but_not_yet_taken_is_not_lost_when_cancelled() -> None:
    async def scenario() -> None:
        line = SpawnLine(1, Clock())
        starts = Starts(line)
        for name in "abc":
            starts.ask(name)
        await settle()
        starts.done["a"].set_result(None)
        for _ in range(10):  # until a has left and handed its turn to b, before b has run
            await asyncio.sleep(0)
            if line.standing("b") and line.standing("b").starting:
                break
        assert "b" not in starts.began, "b took its turn before the test could cancel it"
        starts.tasks["b"].cancel()
        await settle()
        assert "b" not in starts.began
        assert starts.began == ["a", "c"]

    run(scenario())


def test_estimates_follow_the_measured_starts() -> None:
    async def scenario() -> None:
        clock = Clock()
        line = SpawnLine(2, clock)
        starts = Starts(line)
        for name in "abcdef":
            starts.ask(name)
        await settle()
        waiting = line.standing("c")
        assert (waiting.ahead, waiting.starting, waiting.wait_s) == (0, False, None)  # no guess

        clock.now += 10
        await starts.finish("a")  # one start measured: 10 s
        assert line.average() == 10
        # b began at 0 and has 0 s left; c began just now; d waits for b's slot, e for c's
        assert line.standing("d").wait_s == pytest.approx(0)
        assert line.standing("e").wait_s == pytest.approx(10)
        assert line.standing("f").wait_s == pytest.approx(10)
        assert line.standing("f").ready_s == pytest.approx(20)

        clock.now += 20
        await starts.finish("b")  # 30 s: the average moves to 20 s
        assert line.average() == pytest.approx(20)
        assert line.standing("c").starting
        assert line.standing("c").ready_s == pytest.approx(0)  # c began 20 s ago
        assert line.standing("e").wait_s == pytest.approx(0)  # the slot c holds ends now
        assert line.standing("f").wait_s == pytest.approx(20)  # after d, which just began

    run(scenario())


def test_the_average_is_of_recent_starts_only() -> None:
    async def scenario() -> None:
        clock = Clock()
        line = SpawnLine(1, clock)
        starts = Starts(line)
        for i in range(spawn_line.WINDOW + 5):
            starts.ask(str(i))
            await settle()
            clock.now += 100 if i < 5 else 4  # slow starts once, fast ones lately
            await starts.finish(str(i))
        assert line.average() == pytest.approx(4)

    run(scenario())


def test_the_spawn_page_says_the_place_and_the_estimate_in_the_persons_language() -> None:
    a, b, c = (type("Spawner", (), {"language": lang, "concurrent_starts": 1})() for lang in "xxx")
    a.language, b.language, c.language = "en", "ru", "en"

    async def scenario() -> list[list[dict[str, Any]]]:
        spawn_line._line = None  # a fresh hub-wide line on this loop
        clock = Clock()
        line = spawn_line.hub_line(1)
        line.clock = clock
        starts = Starts(line)
        for spawner in (a, b, c):
            starts.ask(spawner)  # type: ignore[arg-type]
        await settle()
        said: dict[Any, list[dict[str, Any]]] = {s: [] for s in (a, b, c)}

        async def watch(spawner: Any) -> None:
            async for event in spawn_progress.events(spawner):
                said[spawner].append(event)

        watchers = [asyncio.create_task(watch(s)) for s in (a, b, c)]
        await settle()
        clock.now += 30
        await starts.finish(a)  # type: ignore[arg-type]
        await settle()
        clock.now += 30
        await starts.finish(b)  # type: ignore[arg-type]
        await starts.finish(c)  # type: ignore[arg-type]
        await asyncio.wait_for(asyncio.gather(*watchers), 10)
        return [said[a], said[b], said[c]]

    to_a, to_b, to_c = run(scenario())
    assert [e["message"] for e in to_a] == ["Starting your server…"]
    assert to_b[0]["message"].startswith("Ваше место в очереди: 1. Серверы запускаются по 1")
    assert to_b[1] == {
        "progress": 50,
        "message": "Запускаем ваш сервер: он будет готов примерно через 30 с.",
    }
    assert to_c[0]["message"].startswith("Your place in line: 2.")
    assert to_c[1]["message"] == "Your place in line: 1. Your server should be ready in about 60 s."
    assert [e["progress"] for e in to_c] == [10, 40, 50]
    for event in to_a + to_b + to_c:
        assert "{" not in event["message"] and "_" not in event["message"]  # no raw keys


def test_waits_read_as_words() -> None:
    assert spawn_progress.when("en", 3) == "in a few seconds"
    assert spawn_progress.when("ru", 41) == "примерно через 45 с"
    assert spawn_progress.when("en", 150) == "in about 3 min"
    assert spawn_progress.EN.keys() == spawn_progress.RU.keys()


def test_the_ready_message_is_the_persons_and_its_link_is_escaped() -> None:
    spawner = type("Spawner", (), {"language": "ru"})()
    url = '/user/x"><script>/'
    event = spawn_progress.ready_event(spawner, {"progress": 100, "ready": True, "url": url})
    assert event["message"] == "Сервер готов, открываем его…"
    assert event["ready"] is True and event["url"] == url
    assert "<script>" not in event["html_message"]


def test_concurrent_starts_defaults_to_the_cores_and_comes_from_the_site_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SiteSpawner().concurrent_starts == len(os.sched_getaffinity(0))
    assert load_site(DEMO_SITE).servers.concurrent_starts is None

    site = yaml.safe_load(DEMO_SITE.read_text())
    for wrong in (0, -1, "two"):
        site["servers"]["concurrent_starts"] = wrong
        (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
        with pytest.raises(DescriptorError, match=r"servers\.concurrent_starts"):
            load_site(tmp_path / "site.yaml")
    site["servers"]["concurrent_starts"] = 1
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    monkeypatch.setenv("SMARTLAB_SITE", str(tmp_path / "site.yaml"))
    config = Config()
    runpy.run_path(str(HUB_CONFIG), init_globals={"get_config": lambda: config})
    assert SiteSpawner(config=config).concurrent_starts == 1
    assert config.Spawner.progress_ready_hook is spawn_progress.ready_event


class FakeServer:
    """A spawner's view of its server for `answered`: its base URL and whether it still runs."""

    def __init__(self, alive: bool = True, http_timeout: float = 5) -> None:
        self.server = type("Server", (), {"base_url": "/user/ann/"})()
        self.user = type("User", (), {"name": "ann"})()
        self.http_timeout = http_timeout
        self.alive = alive

    async def poll(self) -> int | None:
        return None if self.alive else 1


async def http_answering(status: int, asked: list[str]) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append((await reader.readline()).decode().split()[1])
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def test_a_place_is_held_until_the_server_answers_where_jupyterhub_asks() -> None:
    async def scenario() -> tuple[str, list[str]]:
        asked: list[str] = []
        server = await http_answering(404, asked)  # any answer below 500 will do, as JupyterHub's
        port = server.sockets[0].getsockname()[1]
        async with server:
            url = await spawn_line.answered(FakeServer(), ("127.0.0.1", port), poll_s=0.01)
        return url, asked

    url, asked = run(scenario())
    assert url.startswith("http://127.0.0.1:")
    assert asked == ["/user/ann/api"]


def test_a_server_that_errs_or_ends_before_answering_fails_the_start() -> None:
    async def scenario() -> None:
        asked: list[str] = []
        server = await http_answering(503, asked)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(TimeoutError):  # 5xx only: JupyterHub's http_timeout applies
                await spawn_line.answered(
                    FakeServer(http_timeout=0.3), f"http://127.0.0.1:{port}", 0.01
                )
            assert len(asked) > 3
            with pytest.raises(spawn_line.ServerGone):
                await spawn_line.answered(FakeServer(alive=False), f"http://127.0.0.1:{port}", 0.01)

    run(scenario())
