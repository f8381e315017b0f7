"""What the client raises: one `LabError` family, for the kits (MQTT) and the lab service."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: the records live with the kits
    from labs.client.mqtt_kits import Ack


class LabError(Exception):
    """Base class of every error this module raises; str() is one line."""


class LabConfigError(LabError, ValueError):
    """No broker URL, or one that is not mqtt://user:password@host:port."""


class LabConnectionError(LabError, ConnectionError):
    """The broker could not be reached or refused the connection."""


class LabClosed(LabError):
    """The lab was closed (before or while a command waited)."""


class LabTimeout(LabError, TimeoutError):
    """`wait_for_kits` gave up."""


class UnknownKit(LabError, LookupError):
    """No kit of that id has announced itself on the broker."""


class CommandError(LabError):
    """A command did not get applied."""


class CommandRejected(CommandError):
    """The kit (or, with `ack.local`, the client before sending) refused the command."""

    def __init__(self, ack: Ack) -> None:
        self.ack = ack
        self.reason = ack.reason
        self.detail = ack.detail
        where = " (checked locally, not sent)" if ack.local else ""
        super().__init__(f"kit {ack.kit} rejected {ack.target}: {ack.reason}: {ack.detail}{where}")


class CommandTimeout(CommandError, TimeoutError):
    """No acknowledgement arrived in time (kit stopped, lost or overloaded)."""


class CommandNotAuthorized(CommandError, PermissionError):
    """The broker refused to take the command: this account may not command that kit."""


class LabServiceError(LabError):
    """The lab service refused a request (4xx) or failed (5xx); str() is its one-line reason,
    `status` the HTTP status (None when there was no answer), `reason` the service's own line
    (in the language the client asked for) and `code` its stable message code (or None)."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        reason: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason if reason is not None else message
        self.code = code


class LabServiceUnavailable(LabServiceError, ConnectionError):
    """The lab service could not be reached."""
