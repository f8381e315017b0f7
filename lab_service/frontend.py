"""HTTP front ends: several processes parse, authenticate and validate requests; the service
process alone decides.

The service process (`LabServiceApp`) opens the listening socket and starts
`LabServiceApp.http_processes` front-end processes that accept connections on it. A front end
answers alone what needs no decision (404, 405, 401, malformed bodies) and hands every
authenticated, validated call to the service process over its own Unix socket pair, as one
frame: (call id, route key, user, path args, query, body) -> (call id, status, result or
(message code, fields)): the front end words a refusal in its request's language. The service
process runs the route's operation on its one event loop thread, exactly as when it serves HTTP
itself: every LabService call still happens on one thread, queue requests
arriving together from any front end are still decided in one transaction, and each answer goes
back as soon as its batch is committed.

Why: in a burst of queue requests most of the time was HTTP work (tornado's parsing, writing,
connection handling: about 0.3 ms a request on the 2-core machine), done one request after
another on the one thread; front ends spread it over the cores.

The channel carries pickles between processes of one service, started by it (a socket pair, no
address anyone else can reach). A front end exits as soon as its channel closes (the service
stopped or died: also PR_SET_PDEATHSIG on Linux), so it never keeps the port; the service
restarts a front end that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.forkserver
import pickle
import signal
import socket
import struct
from collections.abc import Callable
from typing import Any

from lab_service.api_http import HttpLimits, Invoke, make_app, make_server, refusal
from lab_service.api_identity import Identity
from lab_service.api_schemas import ApiError

log = logging.getLogger(__name__)

HEADER = struct.Struct("!I")  # frame length
OK = 200  # status of a reply carrying a result (the route's own status is the front end's)


def frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


class FrameWriter:
    """Frames written in one turn of the event loop go out in one write: a batch's answers (or
    a burst's calls) cost one system call and one wake-up of the other side, not one each."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._chunks: list[bytes] = []

    def send(self, message: Any) -> None:
        if not self._chunks:
            asyncio.get_running_loop().call_soon(self._flush)
        self._chunks.append(frame(message))

    def _flush(self) -> None:
        chunks, self._chunks = self._chunks, []
        if not self.writer.is_closing():
            self.writer.write(b"".join(chunks))


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message; raises asyncio.IncompleteReadError at the end of the stream."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    return pickle.loads(await reader.readexactly(size))


# ---------------------------------------------------------------- the service process's side


async def serve_front_end(channel: socket.socket, invoke: Invoke) -> None:
    """Run the calls of one front end until its channel closes.

    Each frame is started at once (no task for plain results), so queue requests read in one
    turn of the event loop join one batch; a reply is written as soon as its result is known."""
    reader, writer = await asyncio.open_unix_connection(sock=channel)
    replies = FrameWriter(writer)

    def reply(call_id: int, what: str, outcome: Callable[[], Any]) -> None:
        try:
            message = (call_id, OK, outcome())
        except Exception as err:
            status, code, fields = refusal(err, what)
            message = (call_id, status, (code, fields))  # worded by the front end
        replies.send(message)

    try:
        while True:
            try:
                call_id, key, user, args, query, body = await read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            try:
                result = invoke(key, user, args, query, body)
            except Exception as err:
                reply(call_id, key, lambda err=err: _raise(err))
                continue
            if isinstance(result, asyncio.Future):
                result.add_done_callback(
                    lambda f, call_id=call_id, key=key: reply(call_id, key, f.result)
                )
            elif asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                task.add_done_callback(
                    lambda f, call_id=call_id, key=key: reply(call_id, key, f.result)
                )
            else:
                reply(call_id, key, lambda result=result: result)
    finally:
        writer.close()


def _raise(err: Exception) -> Any:
    raise err


# ---------------------------------------------------------------- the front end's side


class ServiceLink:
    """A front end's calls to the service process: `invoke` returns a future of the result."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._calls = FrameWriter(writer)
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self.closed = False

    def invoke(self, key: str, user: Any, args: dict, query: dict, body: Any) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_exception(ApiError(503, "service-stopping"))
            return future
        self._next_id += 1
        self._pending[self._next_id] = future
        self._calls.send((self._next_id, key, user, args, query, body))
        return future

    async def run(self) -> None:
        """Deliver replies until the service process closes the channel."""
        try:
            while True:
                try:
                    call_id, status, payload = await read_frame(self._reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                future = self._pending.pop(call_id, None)
                if future is None or future.done():
                    continue
                if status == OK:
                    future.set_result(payload)
                else:
                    code, fields = payload
                    future.set_exception(ApiError(status, code, **fields))
        finally:
            self.closed = True
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ApiError(503, "service-stopping"))
            self._pending.clear()
            self._writer.close()


def run_front_end(
    index: int,
    sockets: list[socket.socket],
    channel: socket.socket,
    make_identity: Callable[[], Identity],
    base_url: str,
    log_level: int,
    limits: HttpLimits,
) -> None:
    """A front-end process's main function (multiprocessing, spawn)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the service process's to handle
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter(f"[%(levelname)1.1s %(asctime)s front end {index}] %(message)s")
    )
    for name in ("hardware_kits", "labs", "tornado"):  # as the service process's log
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(log_level)
        logger.propagate = False
    logging.getLogger("tornado.access").setLevel(logging.WARNING)  # refusals and errors
    identity = make_identity()
    asyncio.run(_serve(sockets, channel, identity, base_url, limits))


async def _serve(
    sockets: list[socket.socket],
    channel: socket.socket,
    identity: Identity,
    base_url: str,
    limits: HttpLimits,
) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=channel)
    link = ServiceLink(reader, writer)
    server = make_server(make_app(identity, link.invoke, base_url=base_url, limits=limits), limits)
    server.add_sockets(sockets)
    gc.freeze()  # start-up objects live as long as the process: no full collection walks them
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, writer.close)  # stop like a closed channel
    try:
        await link.run()
    finally:
        server.stop()  # stop accepting first: the port is the next process's at once
        for sock in sockets:
            sock.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.close_all_connections(), 2)


def _die_with_parent() -> None:
    """Linux: the kernel ends this process when the service process dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


# ---------------------------------------------------------------- starting and watching them


# Front ends come from a fork server (safe with the service's threads, as "spawn" is) that has
# this module imported: one starts in milliseconds instead of a new interpreter's second or two,
# which is most of a standby's takeover on a loaded machine.
FRONT_END_START = "forkserver"


def preload_front_ends() -> None:
    """Start the front ends' fork server now, with their modules imported: call it early (a
    standby, while it waits to lead), before the service starts its own threads."""
    context = multiprocessing.get_context(FRONT_END_START)
    context.set_forkserver_preload([__name__])
    multiprocessing.forkserver.ensure_running()


class FrontEnds:
    """The service process's front-end processes: started on the listening sockets, each served
    through its channel, restarted if one dies, stopped by closing their channels."""

    RESTART_PAUSE_S = 1.0  # a front end that dies at once is not restarted in a tight loop

    def __init__(
        self,
        count: int,
        sockets: list[socket.socket],
        invoke: Invoke,
        make_identity: Callable[[], Identity],
        base_url: str,
        log_level: int,
        limits: HttpLimits = HttpLimits(),  # noqa: B008 (frozen)
    ) -> None:
        self.count = count
        self.limits = limits
        self.sockets = sockets
        self.invoke = invoke
        self.make_identity = make_identity
        self.base_url = base_url
        self.log_level = log_level
        self._mp = multiprocessing.get_context(FRONT_END_START)
        self._running: dict[int, tuple[Any, socket.socket]] = {}
        self._watchers: set[asyncio.Task] = set()
        self._stopping = False

    def start(self) -> None:
        for index in range(self.count):
            self._start(index)

    def _start(self, index: int) -> None:
        ours, theirs = socket.socketpair()
        process = self._mp.Process(
            target=run_front_end,
            name=f"lab-front-end-{index}",
            daemon=True,
            args=(
                index,
                self.sockets,
                theirs,
                self.make_identity,
                self.base_url,
                self.log_level,
                self.limits,
            ),
        )
        process.start()
        theirs.close()
        self._running[index] = (process, ours)
        task = asyncio.ensure_future(self._watch(index, process, ours))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, index: int, process: Any, channel: socket.socket) -> None:
        started = asyncio.get_running_loop().time()
        await serve_front_end(channel, self.invoke)
        if self._stopping:
            return
        await asyncio.get_running_loop().run_in_executor(None, process.join, 5)
        log.error(
            "HTTP front end %d stopped (exit code %s); starting another", index, process.exitcode
        )
        if asyncio.get_running_loop().time() - started < 5:
            await asyncio.sleep(self.RESTART_PAUSE_S)
        if not self._stopping:
            self._start(index)

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        for _, channel in self._running.values():
            with contextlib.suppress(OSError):  # the front end sees the end and exits
                channel.shutdown(socket.SHUT_RDWR)
        loop = asyncio.get_running_loop()
        for process, _ in self._running.values():
            await loop.run_in_executor(None, process.join, timeout)
            if process.is_alive():
                process.terminate()
                await loop.run_in_executor(None, process.join, 2)
        for task in list(self._watchers):
            task.cancel()
