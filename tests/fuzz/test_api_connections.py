"""Connections that never finish and bodies over the limit, against the lab service in its own
process (HTTP front ends as deployed; the real broker).

An attacker holding many connections open (request heads never finished, a Content-Length longer
than the body sent) must neither keep them for ever nor slow other clients; a body over the limit
is refused with 413 and the error JSON before it is read, and the client gets that answer (not a
reset connection)."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest

from tests.stack import FAST_POLICY, ServiceProcess, call_api, token, with_tokens

pytestmark = pytest.mark.broker

TIMEOUT_S = 2.0  # the service's read timeouts in this test (default 10 s)
LIMIT = 65_536  # the service's body limit (its default)
HELD = 200
SETTINGS = (
    FAST_POLICY
    + f"c.LabServiceApp.header_timeout_seconds = {TIMEOUT_S}\n"
    + f"c.LabServiceApp.body_timeout_seconds = {TIMEOUT_S}\n"
    + f"c.LabServiceApp.max_body_bytes = {LIMIT}\n"
)
USERS = {"alice": {"name": "alice", "institution": "univ-a"}}


@pytest.fixture(scope="module")
def service(broker, state_root):
    running = ServiceProcess(
        broker, state_root, with_tokens(USERS), name="lab-connections", settings=SETTINGS
    ).start()
    # Listening comes before the front ends have started: wait until they answer.
    assert call_api(running.port, "GET", "/api/me", token("alice"), timeout=60)[0] == 200
    yield running
    running.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def _answer(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict, dict]:
    """Read one answer until the server closes: (status, headers, JSON body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, json.loads(body[: _length(data)] or b"null")


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            return int(line.split(":", 1)[1])
    return 0


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass  # an answer (none is expected) or the close
    except TimeoutError:
        return False
    except OSError:
        return True  # reset: closed too
    return True


def test_held_connections_neither_block_others_nor_stay_open(service):
    auth = f"Authorization: token {token('alice')}\r\n"
    held = []
    for n in range(HELD):
        sock = _connect(service.port)
        if n % 2:  # the head never finishes
            sock.sendall(f"GET /api/kits HTTP/1.1\r\nHost: lab\r\n{auth}X-Slow: ".encode())
        else:  # the body never arrives whole
            sock.sendall(
                f"POST /api/queue HTTP/1.1\r\nHost: lab\r\n{auth}"
                'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"kit":'.encode()
            )
        held.append(sock)
    started = time.monotonic()
    try:
        status, _ = call_api(service.port, "GET", "/api/me", token("alice"), timeout=5)
    except TimeoutError:
        pytest.fail(f"another client was not answered:\n{service.output(40)}")
    assert status == 200
    assert time.monotonic() - started < 1.0, "another client waited behind the held connections"
    deadline = time.monotonic() + TIMEOUT_S + 5
    still_open = [
        s for s in held if not _closed_by_server(s, max(0.1, deadline - time.monotonic()))
    ]
    for sock in held:
        sock.close()
    assert not still_open, f"{len(still_open)} of {HELD} held connections were not closed"
    assert call_api(service.port, "GET", "/api/me", token("alice"), timeout=5)[0] == 200


@pytest.mark.parametrize("size", [10 * 1024 * 1024, LIMIT + 1])
def test_a_body_over_the_limit_gets_413_with_the_error_json(service, size):
    sock = _connect(service.port)
    head = (
        f"POST /api/queue HTTP/1.1\r\nHost: lab\r\nAuthorization: token {token('alice')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    )
    body = b'{"kit": "' + b"x" * (size - 11) + b'"}'
    assert len(body) == size
    # As a naive client: everything, then read. The server may stop reading: its answer is
    # still there to read.
    with contextlib.suppress(OSError):
        sock.sendall(head.encode() + body)
    status, headers, answer = _answer(sock)
    sock.close()
    assert status == 413, answer
    assert headers["Content-Type"].startswith("application/json")
    assert set(answer) == {"error", "code"} and str(LIMIT) in answer["error"]


def test_a_large_body_announced_is_refused_before_it_is_sent(service):
    """With `Expect: 100-continue` (curl sends it for large bodies) the client learns of the
    refusal without sending a byte of the body: no 100 Continue comes first."""
    sock = _connect(service.port)
    sock.sendall(
        f"PUT /api/kits/k1/maintenance HTTP/1.1\r\nHost: lab\r\nContent-Length: {10**12}\r\n"
        "Expect: 100-continue\r\nContent-Type: application/json\r\n\r\n".encode()
    )
    status, _, answer = _answer(sock)
    sock.close()
    assert status == 413 and set(answer) == {"error", "code"}


def test_a_body_at_the_limit_is_read_and_a_chunked_one_needs_a_length(service):
    body = b'{"kit": "no-such-kit"}'
    body += b" " * (LIMIT - len(body))
    status, answer = call_api(
        service.port, "POST", "/api/queue", token("alice"), raw=body, timeout=10
    )
    assert status == 404 and set(answer) == {"error", "code"}  # read and understood
    sock = _connect(service.port)
    sock.sendall(
        f"POST /api/queue HTTP/1.1\r\nHost: lab\r\nAuthorization: token {token('alice')}\r\n"
        "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        '5\r\n{"kit\r\n'.encode()
    )
    status, _, answer = _answer(sock)
    sock.close()
    assert status == 411 and set(answer) == {"error", "code"}
