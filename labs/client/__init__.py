"""The Smart City Lab client: discover kits, read their telemetry and command them over MQTT.

Used from Jupyter notebooks, Voilà dashboards and services::

    from labs.client import connect

    with connect() as lab:                      # URL from SMARTLAB_MQTT_URL, else the lab service
        lab.wait_for_kits(1)
        kit = lab.kit("lamp-1")
        t, v = kit.history("ambient-light")     # numpy arrays, oldest first
        pictures = kit.frames(start, end)       # recorded (ts, HxWx3 array), via the lab service
        kit.set("mode", "manual")               # -> Ack, or raises CommandRejected/...

Threading: one paho network thread per `Lab` receives every message and updates the kits'
state under one lock; every public method may be called from any thread. Callbacks given to
`Kit.subscribe` and `Lab.on_state` run on that network thread: keep them short, do not block in
them and do not send commands from them (`Kit.set` there raises `LabError`, since the
acknowledgement could never be received). An exception in a callback is logged and counted in
`Lab.callback_errors`; it never stops the network thread.

Topics and payloads all come from `hardware_kits.protocol`.

Shared kits are held through the lab service (its REST API, `LabService`): queue for a kit,
then command it through the control account the service grants while the session lasts::

    from labs.client import LabService

    lab = LabService("http://127.0.0.1:8181", token)   # or $SMARTLAB_LAB_URL, $SMARTLAB_TOKEN
                                                    # (in a hub server: $JUPYTERHUB_API_TOKEN)
    with lab.session("streetlight-1") as kit:       # waits in the queue, prints the position
        kit.set("mode", "manual")                   # released on leaving the block

A controller written in the notebook runs on a kit as an experiment job, from the queue::

    job = lab.submit_job(controller, kit="streetlight-1", duration_s=30)
    result = job.wait().result()                    # trace, commands, frames, score

The package is split by job: `mqtt_kits` (the kits over MQTT), `rest_service` (the lab service's
REST API and sessions) and `errors`; notebooks import everything from here.
"""

from __future__ import annotations

import os

from labs.client.controller_source import ControllerSourceError, controller_source
from labs.client.errors import (
    CommandError,
    CommandNotAuthorized,
    CommandRejected,
    CommandTimeout,
    LabClosed,
    LabConfigError,
    LabConnectionError,
    LabError,
    LabServiceError,
    LabServiceUnavailable,
    LabTimeout,
    UnknownKit,
)
from labs.client.jobs import Job, JobResult
from labs.client.mqtt_kits import (
    HOMIE_STATES,
    SAFE_STATE_PAYLOAD,
    URL_ENV,
    Ack,
    Kit,
    KitInfo,
    Lab,
    SampleCallback,
    StateCallback,
    open_lab,
)
from labs.client.recorded import Replay, fetch_replay
from labs.client.rest_service import (
    DEFAULT_SERVICE_URL,
    HUB_TOKEN_ENV,
    SERVICE_URL_ENV,
    TOKEN_ENV,
    LabService,
    Progress,
    session,
)


def connect(
    url: str | None = None,
    *,
    client_id: str | None = None,
    history: int = 3600,
    timeout: float = 10.0,
) -> Lab:
    """Connect to the lab's broker; `url` defaults to $SMARTLAB_MQTT_URL, else to the watch
    account the lab service gives this user (`LabService().mqtt_urls()`): in a notebook of the
    hub nothing needs typing.

    `history` is how many samples per sensor each kit keeps for `Kit.history` (0: none)."""
    url = url or os.environ.get(URL_ENV)
    if not url:
        try:
            url = LabService(timeout=timeout).mqtt_urls()["watch"]
        except LabConfigError:
            raise LabConfigError(
                f"no broker URL: pass connect('mqtt://user:password@host:port'), set {URL_ENV}, "
                f"or give the lab service's token in {TOKEN_ENV} (in a hub server: "
                f"{HUB_TOKEN_ENV})"
            ) from None
        except LabServiceError as err:
            raise LabConnectionError(
                f"no broker URL: the lab service did not give one: {err}"
            ) from None
    return open_lab(
        url,
        client_id=client_id,
        history=history,
        timeout=timeout,
        service=lambda: LabService(timeout=timeout),
    )


__all__ = [
    "DEFAULT_SERVICE_URL",
    "HOMIE_STATES",
    "HUB_TOKEN_ENV",
    "SAFE_STATE_PAYLOAD",
    "SERVICE_URL_ENV",
    "TOKEN_ENV",
    "URL_ENV",
    "Ack",
    "CommandError",
    "CommandNotAuthorized",
    "CommandRejected",
    "CommandTimeout",
    "ControllerSourceError",
    "Job",
    "JobResult",
    "Kit",
    "KitInfo",
    "Lab",
    "LabClosed",
    "LabConfigError",
    "LabConnectionError",
    "LabError",
    "LabService",
    "LabServiceError",
    "LabServiceUnavailable",
    "LabTimeout",
    "Progress",
    "Replay",
    "SampleCallback",
    "StateCallback",
    "UnknownKit",
    "connect",
    "controller_source",
    "fetch_replay",
    "session",
]
