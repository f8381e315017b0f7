"""A person in a browser, as far as HTTP goes: log in to the hub, start a server, call it.

Everything goes through the hub's public URL (the proxy), with cookies, the OAuth redirects
between hub, servers and services, and the XSRF tokens, as a browser sends them.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urljoin

import requests


class HubError(AssertionError):
    pass


class Browser:
    def __init__(self, hub_url: str, username: str = "") -> None:
        self.hub_url = hub_url.rstrip("/")
        self.username = username
        self.http = requests.Session()
        self.http.trust_env = False  # loopback only: no proxy from the environment

    def url(self, path: str) -> str:
        return urljoin(self.hub_url + "/", path.lstrip("/"))

    def _xsrf(self, path: str) -> str | None:
        """The `_xsrf` cookie whose path covers `path` (hub, server or service)."""
        best = None
        for cookie in self.http.cookies:
            if (
                cookie.name == "_xsrf"
                and path.startswith(cookie.path)
                and (best is None or len(cookie.path) > len(best.path))
            ):
                best = cookie
        return best.value if best else None

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        token = self._xsrf(path if path.startswith("/") else "/" + path)
        if token and method != "GET":
            headers["X-XSRFToken"] = token
        kwargs.setdefault("timeout", 60)
        return self.http.request(method, self.url(path), headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    # ------------------------------------------------------------ the hub

    def login(self, password: str) -> requests.Response:
        self.get("/hub/login")  # sets the hub's _xsrf cookie
        answer = self.http.post(
            self.url("/hub/login"),
            timeout=30,
            data={
                "username": self.username,
                "password": password,
                "_xsrf": self._xsrf("/hub/login") or "",
            },
            allow_redirects=False,
        )
        if answer.status_code != 302:
            raise HubError(f"login of {self.username} answered {answer.status_code}")
        return answer

    def start_server(self, timeout: float = 120.0) -> None:
        answer = self.post(f"/hub/api/users/{self.username}/server")
        if answer.status_code not in (201, 202, 400):  # 400: already running
            raise HubError(
                f"start of {self.username}'s server: {answer.status_code} {answer.text[:200]}"
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.get(f"/hub/api/users/{self.username}").json()
            server = model.get("servers", {}).get("")
            if server and server.get("ready"):
                return
            time.sleep(0.5)
        raise HubError(f"{self.username}'s server not ready within {timeout} s")

    # ------------------------------------------------------------ servers and services

    def open(self, prefix: str) -> requests.Response:
        """Visit a server or service page: runs its OAuth with the hub, sets its cookies."""
        answer = self.get(prefix)
        if answer.status_code != 200:
            raise HubError(f"{prefix} answered {answer.status_code} for {self.username}")
        return answer


def json_of(answer: requests.Response) -> Any:
    if answer.status_code >= 400:
        raise HubError(
            f"{answer.request.method} {answer.url}: {answer.status_code} {answer.text[:300]}"
        )
    return answer.json()


def run_in_kernel(browser: Browser, code: str, timeout: float = 60.0) -> str:
    """Run `code` in a new kernel of the browser user's server, as a notebook does; its stdout."""
    import asyncio
    import json
    import uuid

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    prefix = f"/user/{browser.username}/api/kernels"
    kernel = json_of(browser.post(prefix, json={"name": "python3"}))
    cookies = "; ".join(
        f"{c.name}={c.value}"
        for c in browser.http.cookies
        if f"/user/{browser.username}/".startswith(c.path)
    )
    ws_url = browser.url(f"{prefix}/{kernel['id']}/channels").replace("http", "ws", 1)
    msg_id = uuid.uuid4().hex

    async def execute() -> str:
        request = HTTPRequest(
            ws_url, headers={"Cookie": cookies, "Origin": browser.hub_url}, request_timeout=timeout
        )
        socket = await websocket_connect(request)
        socket.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "",
                        "session": uuid.uuid4().hex,
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        out: list[str] = []
        # The reply comes on the shell channel and the output on iopub: their order is not
        # fixed, so the output is complete only once iopub reports the kernel idle again.
        replied = idle = False
        while not (replied and idle):
            raw = await asyncio.wait_for(socket.read_message(), timeout)
            if raw is None:
                raise HubError("the kernel's websocket closed")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                raise HubError("\n".join(msg["content"]["traceback"])[-500:])
            elif msg["msg_type"] == "execute_reply":
                replied = True
            elif msg["msg_type"] == "status":
                idle = msg["content"]["execution_state"] == "idle"
        socket.close()
        return "".join(out)

    try:
        return asyncio.run(execute())
    finally:
        browser.request("DELETE", f"{prefix}/{kernel['id']}")
