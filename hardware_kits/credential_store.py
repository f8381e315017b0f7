"""The broker accounts' passwords, kept in one JSON file (the state folder's
`broker/credentials.json`, or a copy of it in a Kubernetes Secret):
`{"<account>": {"username": "<account>", "password": "…"}}`."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from hardware_kits.mqtt import Credentials

# The broker admin for `smartlab broker provision`, e.g. from a Kubernetes Secret; both set or
# neither (then the file's admin entry is used).
ADMIN_USER_ENV = "SMARTLAB_MQTT_ADMIN_USER"
ADMIN_PASSWORD_ENV = "SMARTLAB_MQTT_ADMIN_PASSWORD"


class CredentialStoreError(ValueError):
    """The file cannot give an account's password; str() says which and why in one line."""


class CredentialStore:
    """Reads accounts from the file and adds a generated password for a new one (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            store = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:
            raise CredentialStoreError(
                f"{self.path}: not a readable credentials file: {err}"
            ) from None
        if not isinstance(store, dict):
            raise CredentialStoreError(f"{self.path}: not a JSON object of accounts")
        return store

    def existing(self, username: str) -> Credentials | None:
        entry = self._read().get(username)
        if entry is None:
            return None
        try:
            return Credentials(str(entry["username"]), str(entry["password"]))
        except (KeyError, TypeError):
            raise CredentialStoreError(
                f"{self.path}: {username}: needs a username and a password"
            ) from None

    def credentials(self, username: str) -> Credentials:
        """The account's credentials, generated and written on first use."""
        found = self.existing(username)
        if found is not None:
            return found
        store = self._read()
        store[username] = {"username": username, "password": secrets.token_urlsafe(18)}
        try:
            self.path.touch(mode=0o600, exist_ok=True)
            self.path.write_text(json.dumps(store, indent=1))
        except OSError as err:  # e.g. a read-only Secret that lacks the account
            raise CredentialStoreError(
                f"{self.path}: no password for {username!r} and none can be added: "
                f"{err.strerror or err}"
            ) from None
        return Credentials(**store[username])

    def admin(self, username: str) -> Credentials:
        """The broker admin: from the environment if set there, else from the file; never made
        up (a new admin password would not be the broker's)."""
        user, password = os.environ.get(ADMIN_USER_ENV), os.environ.get(ADMIN_PASSWORD_ENV)
        if user and password:
            return Credentials(user, password)
        found = self.existing(username)
        if found is None:
            raise CredentialStoreError(
                f"no broker admin: set {ADMIN_USER_ENV} and {ADMIN_PASSWORD_ENV} "
                f"or give a credentials file with {username!r} (not {self.path})"
            )
        return found
