"""Broker rights of platform users: who may watch which kits, who may command which kit now.

Dynamic security disconnects ("kicks") every connection of a client whose roles change. So that
granting and revoking never interrupts a student's telemetry, every user has two MQTT accounts:

- the watch account (username = platform username) holds `observe-<kit>` roles (or
  `observe_all_kits`); it is set up once and never changes during sessions;
- an experiment job (lab_service/jobs.py) is a holder of its own: its account `job-<id>` is
  created with a random password when its session is granted, may watch and command only that
  kit, and is deleted (its connections cut) when the session ends;
- the control account (`ctl-<user>`) holds `command-<kit>` exactly while the user holds that
  kit, beside a watch role that never changes (so one connection can see and command a kit).
  Its kick on revoke is wanted: a connection opened under the old rights is cut, and whatever
  it sends after reconnecting is checked against the new ones.

Grant and revoke are one dynsec round trip each. The broker is the truth: `held()` reads it, and
`reconcile()` aligns it with the sharing service's holders after a crash.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Iterable
from typing import Any

from hardware_kits.broker import (
    ADMIN,
    OBSERVER_ROLE,
    ack_acls,
    ack_role,
    command_role,
    observe_role,
    priorities,
)
from hardware_kits.dynsec import DynSec, DynSecError, role_ref
from hardware_kits.mqtt import Credentials
from site_config.platform_accounts import BRIDGE_PREFIX, CONTROL_PREFIX, JOB_PREFIX, KIT_PREFIX

COMMAND_PREFIX = command_role("")
OBSERVE_PREFIX = observe_role("")
# Other accounts live in the same dynsec namespace: a user of such a name would take them over.
RESERVED_PREFIXES = (CONTROL_PREFIX, KIT_PREFIX, BRIDGE_PREFIX, JOB_PREFIX)
JOB_ACCOUNT = re.compile(re.escape(JOB_PREFIX) + r"[1-9][0-9]{0,18}")
USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")

# Mosquitto 2.0.11 answers "Internal error" to addClientRole for a role the client already has.
ALREADY_HELD = "Internal error"
CLIENT_NOT_FOUND = "Client not found"
ROLE_NOT_FOUND = "Role not found"
EVERY_ERROR = ("",)  # DynSec.call's `tolerate` matches substrings: "" lets us read each answer
NO_ANSWER = "did not answer"


def validate_user(user: str) -> str:
    """Return `user` if it can be an MQTT username and role-name part; raise ValueError if not."""
    if not isinstance(user, str) or not USER_NAME.fullmatch(user):
        raise ValueError(
            f"invalid user name {user!r}: use 1 to 64 characters of A-Z a-z 0-9 . _ @ -"
        )
    if user.startswith(RESERVED_PREFIXES) or user == ADMIN:
        raise ValueError(
            f"invalid user name {user!r}: names starting with "
            f"{' or '.join(RESERVED_PREFIXES)} (and {ADMIN!r}) are reserved "
            "for the platform's own accounts"
        )
    return user


def job_account(job_id: int) -> str:
    """The MQTT account (and session holder name) of an experiment job."""
    return f"{JOB_PREFIX}{job_id}"


def is_job_account(holder: str) -> bool:
    return bool(JOB_ACCOUNT.fullmatch(holder))


def control_username(user: str) -> str:
    """The MQTT username of a user's control account."""
    return CONTROL_PREFIX + validate_user(user)


def _command(name: str, username: str, **fields: Any) -> dict[str, Any]:
    return {"command": name, "username": username, **fields}


def _role_change(name: str, username: str, rolename: str) -> dict[str, Any]:
    return _command(name, username, rolename=rolename)


class BrokerRights:
    """Creates the two accounts of each user and moves command roles on and off control accounts.

    Thread-safe: calls are serialised on one kept-open dynsec connection (opening one per call
    would cost a TCP and MQTT handshake on every grant)."""

    def __init__(
        self, dynsec_factory: Callable[[], DynSec], credentials: Callable[[str], Credentials]
    ) -> None:
        self._factory = dynsec_factory
        self._credentials = credentials
        self._dynsec: DynSec | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- dynsec connection

    def _call(self, *commands: dict[str, Any]) -> list[dict[str, Any]]:
        """Send one batch and return one answer per command (errors are left to the caller).

        A dropped or silent connection is replaced and the batch sent once more: every batch
        this class sends is idempotent, so a repeat is harmless."""
        with self._lock:
            try:
                answers = self._connection().call(*commands, tolerate=EVERY_ERROR)
            except DynSecError as err:
                if NO_ANSWER not in str(err):
                    raise
                self._drop()  # a late answer would otherwise be taken for the next batch's
                answers = self._connection().call(*commands, tolerate=EVERY_ERROR)
        if len(answers) != len(commands):
            raise DynSecError(
                f"the dynamic-security plugin answered {len(answers)} of {len(commands)} commands"
            )
        return answers

    def _connection(self) -> DynSec:
        client = getattr(self._dynsec, "_client", None)
        if client is not None and not client.is_connected():
            self._drop()  # paho would reconnect, but only after its back-off (1 s and more)
        if self._dynsec is None:
            self._dynsec = self._factory()
        return self._dynsec

    def _drop(self) -> None:
        if self._dynsec is not None:
            try:
                self._dynsec.close()
            finally:
                self._dynsec = None

    def close(self) -> None:
        """Close the dynsec connection (a later call opens a new one)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> BrokerRights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- accounts

    def watch_account(self, user: str, kit_ids: Iterable[str] | None) -> Credentials:
        """Create or align the user's watch account: observe roles for `kit_ids` (None: all).

        Only roles that differ are touched, and the password only together with them: any change
        disconnects the account, so a repeated call with the same kits keeps its streams up.
        Roles outside the wanted set (command roles included) are removed: rights on this
        account would survive every revoke."""
        if isinstance(kit_ids, str):  # would otherwise be taken one character at a time
            raise TypeError("kit_ids is a list of kit ids or None (all kits), not a string")
        creds = self._credentials(validate_user(user))
        wanted = {OBSERVER_ROLE} if kit_ids is None else {observe_role(k) for k in kit_ids}
        wanted.add(self._own_acks(creds.username))  # `labs.client` listens for its acks
        have = self._roles_or_create(creds, wanted)
        if have is None:
            return creds
        changes = [_role_change("removeClientRole", creds.username, r) for r in have - wanted]
        changes += [
            _command("addClientRole", creds.username, **role_ref(r, priorities(r)))
            for r in wanted - have
        ]
        if changes:
            password = _command("setClientPassword", creds.username, password=creds.password)
            self._check(self._call(password, *changes), password, *changes)
        return creds

    def control_account(self, user: str) -> Credentials:
        """Create the user's control account; an existing one is left untouched (resetting its
        password would disconnect it).

        It may watch the kits too, so that one connection both sees a kit and commands it; that
        role never changes, so only command roles come and go."""
        creds = self._credentials(control_username(user))
        acks = self._own_acks(creds.username)
        have = self._roles_or_create(creds, {OBSERVER_ROLE, acks})
        if have is not None and acks not in have:  # an account made before acks were private
            add = _command("addClientRole", creds.username, **role_ref(acks, priorities(acks)))
            self._check(self._call(add), add)
        return creds

    def _own_acks(self, username: str) -> str:
        """The account's `acks_<username>` role (made if missing): the acknowledgements of its
        own commands and no one else's (see hardware_kits.broker)."""
        acks = ack_role(username)
        create = {"command": "createRole", "rolename": acks, "acls": ack_acls(username)}
        error = self._call(create)[0].get("error")
        if error and "already exists" not in error:
            raise DynSecError(f"createRole {acks}: {error}")
        return acks

    def _roles_or_create(self, creds: Credentials, roles: set[str]) -> set[str] | None:
        """Create the client with `roles` and return None, or return the roles it already has."""
        create = _command(
            "createClient",
            creds.username,
            password=creds.password,
            roles=[role_ref(r, priorities(*roles)) for r in sorted(roles)],
        )
        answer = self._call(create)[0]
        error = answer.get("error")
        if not error:
            return None
        if "already exists" not in error:
            raise DynSecError(f"createClient {creds.username}: {error}")
        return self._client_roles(creds.username)

    def _client_roles(self, username: str) -> set[str]:
        answer = self._call(_command("getClient", username))[0]
        if answer.get("error"):
            raise DynSecError(f"getClient {username}: {answer['error']}")
        client = answer.get("data", {}).get("client", {})
        return {r["rolename"] for r in client.get("roles", [])}

    # ---------------------------------------------------------------- grant and revoke

    def grant(self, user: str, kit_id: str) -> None:
        """Let the user's control account command the kit (one round trip; idempotent).

        Creates the control account if it is missing. A job holder (`job-<id>`) gets its own
        account instead (`grant_job`)."""
        if is_job_account(user):
            self.grant_job(user, kit_id)
            return
        username = control_username(user)
        add = _role_change("addClientRole", username, command_role(kit_id))
        error = self._call(add)[0].get("error")
        if error == CLIENT_NOT_FOUND:
            self.control_account(user)
            error = self._call(add)[0].get("error")
        if error == ALREADY_HELD and command_role(kit_id) in self._client_roles(username):
            return  # a repeated grant; "Internal error" says nothing more specific
        if error == ROLE_NOT_FOUND:
            raise DynSecError(
                f"kit {kit_id!r} has no role {command_role(kit_id)!r}: "
                "provision the kit on the broker first"
            )
        if error:
            raise DynSecError(f"addClientRole {username} {command_role(kit_id)}: {error}")

    def revoke(self, user: str, kit_id: str) -> None:
        """Take the kit's command role off the user's control account (one round trip).

        Idempotent. The plugin disconnects the control account even when the role was not
        held; a revoke is never skipped on a guess that it is not needed. A job's account is
        deleted (`revoke_job`)."""
        if is_job_account(user):
            self.revoke_job(user)
            return
        username = control_username(user)
        remove = _role_change("removeClientRole", username, command_role(kit_id))
        error = self._call(remove)[0].get("error")
        if error and error not in (CLIENT_NOT_FOUND, ROLE_NOT_FOUND):  # nothing to take away
            raise DynSecError(f"removeClientRole {username} {command_role(kit_id)}: {error}")

    # ---------------------------------------------------------------- experiment jobs

    def grant_job(self, account: str, kit_id: str) -> None:
        """Create the job's account holding exactly `observe-<kit>`, `command-<kit>` and its own
        acknowledgements, with a random password nobody knows yet (`job_password` sets the one
        the runner gets). An account left from before (a crash) is deleted first: nothing of
        an old grant survives."""
        if not is_job_account(account):
            raise ValueError(f"not a job account: {account!r}")
        roles = {observe_role(kit_id), command_role(kit_id), self._own_acks(account)}
        self._call(_command("deleteClient", account))  # absent: "Client not found", fine
        create = _command(
            "createClient",
            account,
            password=secrets.token_urlsafe(24),
            roles=[role_ref(r, priorities(*roles)) for r in sorted(roles)],
        )
        error = self._call(create)[0].get("error")
        if error and ROLE_NOT_FOUND in error:
            self._call(_command("deleteClient", account))
            raise DynSecError(
                f"kit {kit_id!r} has no role {command_role(kit_id)!r}: "
                "provision the kit on the broker first"
            )
        if error:
            raise DynSecError(f"createClient {account}: {error}")

    def job_password(self, account: str) -> str:
        """A fresh password for the job's account, for the runner that claims the job."""
        password = secrets.token_urlsafe(24)
        change = _command("setClientPassword", account, password=password)
        self._check(self._call(change), change)
        return password

    def revoke_job(self, account: str) -> None:
        """Delete the job's account (the plugin cuts its connections) and its acks role.
        Idempotent."""
        answers = self._call(
            _command("deleteClient", account),
            {"command": "deleteRole", "rolename": ack_role(account)},
        )
        for answer in answers:
            error = answer.get("error")
            if error and "not found" not in error.lower():
                raise DynSecError(f"deleting job account {account}: {error}")

    def job_accounts(self) -> set[str]:
        """The job accounts the broker has right now."""
        answer = self._call({"command": "listClients"})[0]
        if answer.get("error"):
            raise DynSecError(f"listClients: {answer['error']}")
        clients = answer.get("data", {}).get("clients", [])
        names = {c if isinstance(c, str) else c.get("username", "") for c in clients}
        return {name for name in names if is_job_account(name)}

    # ---------------------------------------------------------------- broker state

    def held(self) -> dict[str, set[str]]:
        """User -> kit ids whose command role that user's control account has right now
        (users holding none are left out)."""
        held = {
            user: {
                role.removeprefix(COMMAND_PREFIX)
                for role in roles
                if role.startswith(COMMAND_PREFIX)
            }
            for user, roles in self._control_roles().items()
        }
        return {user: kits for user, kits in held.items() if kits}

    def _control_roles(self) -> dict[str, set[str]]:
        """User -> every role of that user's control account (one listClients round trip)."""
        answer = self._call({"command": "listClients", "verbose": True})[0]
        if answer.get("error"):
            raise DynSecError(f"listClients: {answer['error']}")
        result: dict[str, set[str]] = {}
        for client in answer.get("data", {}).get("clients", []):
            username = client.get("username", "")
            if username.startswith(CONTROL_PREFIX):
                result[username.removeprefix(CONTROL_PREFIX)] = {
                    r["rolename"] for r in client.get("roles", [])
                }
        return result

    def reconcile(self, holders: dict[str, str]) -> list[str]:
        """Make the broker match `holders` (kit id -> the user who holds it); return what changed.

        Run at service start: after a crash the broker may still carry grants of sessions that
        ended (removed here, so nobody keeps rights they no longer hold) or lack grants of live
        ones (added). Only command roles are compared; the watch role stays. Job accounts of
        sessions that ended are deleted, those of live ones made again."""
        jobs = {kit: holder for kit, holder in holders.items() if is_job_account(holder)}
        holders = {kit: holder for kit, holder in holders.items() if kit not in jobs}
        notes = []
        existing = self.job_accounts()
        for account in sorted(existing - set(jobs.values())):
            self.revoke_job(account)
            notes.append(f"deleted {account}: its session has ended")
        for kit_id, account in sorted(jobs.items()):
            if account in existing and command_role(kit_id) in self._client_roles(account):
                continue  # intact: its runner's connection and password stay
            self.grant_job(account, kit_id)
            notes.append(f"made {account} again for {kit_id}: the job's session is live")
        for user in holders.values():
            validate_user(user)
        wanted: dict[str, set[str]] = {}
        for kit_id, user in holders.items():
            wanted.setdefault(user, set()).add(command_role(kit_id))
        current = self._control_roles()
        for user in wanted.keys() - current.keys():
            self.control_account(user)
            current[user] = set()
        removals, additions = [], []
        for user, all_roles in sorted(current.items()):
            roles = {r for r in all_roles if r.startswith(COMMAND_PREFIX)}
            keep = wanted.get(user, set())
            for role in sorted(roles - keep):
                removals.append(_role_change("removeClientRole", CONTROL_PREFIX + user, role))
                notes.append(_describe_removal(user, role))
            for role in sorted(keep - roles):
                additions.append(_role_change("addClientRole", CONTROL_PREFIX + user, role))
                notes.append(
                    f"granted {role.removeprefix(COMMAND_PREFIX)} to {user}: "
                    "the holder lacked the broker right"
                )
        # Every removal before any addition: a kit's right moving from one user to another is
        # never held by both, even between two commands of the batch.
        changes = removals + additions
        if changes:
            self._check(self._call(*changes), *changes)
        return notes

    def _check(self, answers: list[dict[str, Any]], *commands: dict[str, Any]) -> None:
        for command, answer in zip(commands, answers, strict=True):
            if answer.get("error"):
                what = " ".join(
                    filter(None, (command["command"], command["username"], command.get("rolename")))
                )
                raise DynSecError(f"{what}: {answer['error']}")


def _describe_removal(user: str, role: str) -> str:
    return f"revoked {role.removeprefix(COMMAND_PREFIX)} from {user}: not the holder any more"
