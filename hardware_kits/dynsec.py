"""A client for Mosquitto's dynamic-security control API.

Commands are JSON documents published to `$CONTROL/dynamic-security/v1`; the plugin answers on
`.../response`. Mosquitto 2.0.11's `mosquitto_ctrl dynsec setDefaultACLAccess` is broken, so
everything goes through this API. Note that dynsec disconnects a client whose roles change:
callers that grant and revoke rights must do so on connections that carry nothing else.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from hardware_kits.mqtt import ConnectError, Credentials, connect_client

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
ALREADY_EXISTS = ("already exists",)


class DynSecError(RuntimeError):
    """The plugin refused a command."""


class DynSec:
    """A connection as the broker's admin that sends dynsec commands and waits for answers."""

    def __init__(self, host: str, port: int, admin: Credentials, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.host, self.port = host, port
        self._lock = threading.Lock()  # one batch in flight: the plugin answers in order
        self._answer: list[dict[str, Any]] | None = None
        self._answered = threading.Event()
        self._client = connect_client(
            host,
            port,
            admin,
            client_id=f"dynsec-{uuid.uuid4().hex[:8]}",
            on_message=self._on_message,
            subscribe=[(RESPONSE_TOPIC, 1)],
        )

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._answer = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            self._answer = [{"error": "unreadable response from the dynamic-security plugin"}]
        self._answered.set()

    def call(self, *commands: dict[str, Any], tolerate: tuple[str, ...] = ()) -> list[dict]:
        """Send commands as one batch; raise DynSecError unless every error is tolerated."""
        with self._lock:
            self._answered.clear()
            info = self._client.publish(
                CONTROL_TOPIC, json.dumps({"commands": list(commands)}), qos=1
            )
            info.wait_for_publish(self.timeout)
            if not self._answered.wait(self.timeout):
                raise DynSecError(
                    f"the dynamic-security plugin did not answer within {self.timeout} s"
                )
            answers = self._answer or []
        for command, answer in zip(commands, answers, strict=False):
            error = answer.get("error")
            if error and not any(t in error for t in tolerate):
                raise DynSecError(f"{command['command']}: {error}")
        return answers

    # ---------------------------------------------------------------- convenience

    def create_role(self, rolename: str, acls: list[dict[str, Any]]) -> None:
        """Create a role, or reset the ACLs of an existing one to `acls`."""
        answers = self.call(
            {"command": "createRole", "rolename": rolename, "acls": acls}, tolerate=ALREADY_EXISTS
        )
        if answers and answers[0].get("error"):
            current = self.call({"command": "getRole", "rolename": rolename})[0]
            old = current.get("data", {}).get("role", {}).get("acls", [])
            if _acl_key(old) != _acl_key(acls):
                self.call(
                    *[
                        {
                            "command": "removeRoleACL",
                            "rolename": rolename,
                            "acltype": a["acltype"],
                            "topic": a["topic"],
                        }
                        for a in old
                    ],
                    *[{"command": "addRoleACL", "rolename": rolename, **a} for a in acls],
                )

    def ensure_client(
        self,
        creds: Credentials,
        roles: list[str],
        priority: dict[str, int] | None = None,
        keep_working_password: bool = False,
    ) -> None:
        """Create a client with these roles (at `priority[role]`, else the default), or align an
        existing one's password and add the roles it lacks.

        Setting a password disconnects every connection of the account, even to the same
        password; `keep_working_password` first tries it and leaves a working one alone."""
        answers = self.call(
            {
                "command": "createClient",
                "username": creds.username,
                "password": creds.password,
                "roles": [role_ref(r, priority) for r in roles],
            },
            tolerate=ALREADY_EXISTS,
        )
        if answers and answers[0].get("error"):
            info = self.call({"command": "getClient", "username": creds.username})[0]
            held = info.get("data", {}).get("client", {}).get("roles", [])
            have = {r["rolename"]: r.get("priority", -1) for r in held}
            # A role held at another priority than wanted is taken off and given again.
            moved = [
                r for r in roles if r in have and r in (priority or {}) and have[r] != priority[r]
            ]
            password = [
                {
                    "command": "setClientPassword",
                    "username": creds.username,
                    "password": creds.password,
                }
            ]
            if keep_working_password and self.authenticates(creds):
                password = []
            changes = [
                *password,
                *[
                    {"command": "removeClientRole", "username": creds.username, "rolename": r}
                    for r in moved
                ],
                *[
                    {
                        "command": "addClientRole",
                        "username": creds.username,
                        **role_ref(r, priority),
                    }
                    for r in roles
                    if r not in have or r in moved
                ],
            ]
            if changes:
                self.call(*changes)

    def authenticates(self, creds: Credentials) -> bool:
        """Whether the broker takes these credentials (a throwaway connection)."""
        try:
            client = connect_client(
                self.host, self.port, creds, f"check-{uuid.uuid4().hex[:8]}", timeout=self.timeout
            )
        except ConnectError:
            return False
        client.disconnect()
        client.loop_stop()
        return True

    def set_default_acl_access(self, **allow: bool) -> None:
        """e.g. set_default_acl_access(publishClientSend=False, subscribe=False)."""
        self.call(
            {
                "command": "setDefaultACLAccess",
                "acls": [{"acltype": k, "allow": v} for k, v in allow.items()],
            }
        )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> DynSec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _acl_key(acls: list[dict[str, Any]]) -> set[tuple]:
    return {
        (a["acltype"], a["topic"], bool(a.get("allow", True)), a.get("priority", 0)) for a in acls
    }


def role_ref(rolename: str, priority: dict[str, int] | None = None) -> dict[str, Any]:
    """A client's reference to a role; roles of higher priority are checked first."""
    if priority and rolename in priority:
        return {"rolename": rolename, "priority": priority[rolename]}
    return {"rolename": rolename}


def allow(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def deny(acltype: str, topic: str, priority: int = 0) -> dict[str, Any]:
    """A denial; with a priority above the role's allows it is checked before them."""
    return {"acltype": acltype, "topic": topic, "allow": False, "priority": priority}
