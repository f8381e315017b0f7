"""Inside the controller sandbox: load a student's controller and drive one kit with it.

`python -I -m grader.controller_child`, exec-ed by grader/controller_run.py once the process is
confined (no network, read-only filesystem, a pool account, rlimits). It reads its run from
stdin (one JSON object), reaches the broker only through its Unix socket with the job's own
credential, calls the controller once per telemetry sample (each call under a time limit),
sends what it returns as acknowledged commands, refuses commands above the allowed rate
itself, and stops at the run's duration. It reports on fd 3, one JSON object a line: progress
lines (`{"sent": n, "refused": n}`) and a last one with `outcome` and `detail`.

The controller runs in this very process, so it could tamper with these counts or the report;
that changes only its own job's outcome words. What it may do on the kit is the broker's
(the job account's rights), and its trace is the lab service's records.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from hardware_kits import protocol as P
from hardware_kits.mqtt import command_properties

REPORT_FD = 3
MAX_SPEC_BYTES = 1 << 20
CONNECT_SECONDS = 10.0
KIT_SILENCE_SECONDS = 10.0  # no telemetry for this long: the kit is offline
COMMAND_DEADLINE_SECONDS = 5.0
FLOOD_SECONDS = 10  # refusals worth this many seconds of the allowed rate: `flooded`
SOURCE_NAME = "<controller>"


class CallTimeout(BaseException):
    """One call of the controller took longer than its limit (BaseException: a bare
    `except Exception` in student code does not swallow it)."""


class OutputLimit(BaseException):
    """The controller printed more than it may."""


class Stop(Exception):
    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail


class BoundedOutput:
    """stdout/stderr of the controller: written to the log up to `limit` bytes, then an error."""

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream, self.limit, self.written = stream, limit, 0

    def write(self, text: str) -> int:
        self.written += len(text.encode("utf-8", "replace"))
        if self.written > self.limit:
            raise OutputLimit(f"the controller printed more than {self.limit} bytes")
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def report(message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the runner is gone; PDEATHSIG ends us
        os.write(REPORT_FD, (json.dumps(message) + "\n").encode())


def where(err: BaseException) -> str:
    """` (line N)` of the controller's source where `err` was raised, if it was there."""
    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if f.filename == SOURCE_NAME]
    return f" (line {lines[-1]})" if lines else ""


def one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ").strip()
    return text[:200]


# ---------------------------------------------------------------- loading


def load_controller(source: str, entry: str, inputs: dict[str, Any]) -> Callable[..., Any]:
    """`step(readings, t)` from the source: a function `entry(readings, t, **inputs)` or a class
    `entry(**inputs)` with `.step(readings, t)`. Raises Stop(invalid | crashed)."""
    try:
        code = compile(source, SOURCE_NAME, "exec")
    except SyntaxError as err:
        raise Stop("invalid", f"syntax error on line {err.lineno}: {err.msg}") from None
    namespace: dict[str, Any] = {"__name__": "controller"}
    try:
        exec(code, namespace)
    except MemoryError:
        raise Stop("memory", "the controller's source ran out of memory while loading") from None
    except Exception as err:
        raise Stop("crashed", f"loading the source raised {one_line(err)}{where(err)}") from None
    target = namespace.get(entry)
    if target is None:
        raise Stop("invalid", f"the source defines no {entry!r}")
    if isinstance(target, type):
        try:
            instance = target(**inputs)
        except MemoryError:
            raise Stop("memory", "creating the controller ran out of memory") from None
        except Exception as err:
            raise Stop("crashed", f"creating {entry}(**inputs) raised {one_line(err)}") from None
        step = getattr(instance, "step", None)
        if not callable(step):
            raise Stop("invalid", f"class {entry!r} has no step(readings, t) method")
        return step
    if not callable(target):
        raise Stop("invalid", f"{entry!r} is not a function or a class")
    return lambda readings, t: target(readings, t, **inputs)


# ---------------------------------------------------------------- the run


class Run:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.kit: str = spec["kit_id"]
        self.actuators: dict[str, dict] = spec["descriptor"]["actuators"]
        self.rate = float(spec["limits"]["max_commands_per_second"])
        self.call_seconds = float(spec["limits"]["call_seconds"])
        self.samples: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1000)
        self.actuator_values: dict[str, Any] = {}
        self.sent = 0
        self.refused_rate = 0
        self.refused_broker = 0
        self.applied = 0
        self.rejected = 0
        self.bad_returns = 0
        self.first_bad = ""
        self.recent: collections.deque[float] = collections.deque()
        self.requester = f"{spec['mqtt']['username']}/{uuid.uuid4().hex[:8]}"
        self.client: mqtt.Client | None = None
        self.started: float | None = None  # when driving began
        self.ended: float | None = None

    # ---- MQTT (paho's thread)

    def connect(self) -> None:
        access = self.spec["mqtt"]
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.requester.replace("/", "-"),
            protocol=mqtt.MQTTv5,
            transport="unix",
        )
        client.username_pw_set(access["username"], access["password"])
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        connected: queue.Queue[Any] = queue.Queue()

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not reason.is_failure:
                c.subscribe(
                    [
                        (P.telemetry_topic(self.kit), 0),
                        (P.property_topic(self.kit, P.ACTUATORS_NODE, "+"), 0),
                        (P.ack_topic(self.kit, self.requester) + "/#", 1),
                    ]
                )
            connected.put(reason)

        client.on_connect = on_connect
        try:
            client.connect(access["socket_path"], keepalive=30)
        except OSError as err:
            raise Stop("kit-unsafe", f"cannot reach the broker's socket: {err}") from None
        client.loop_start()
        self.client = client
        try:
            reason = connected.get(timeout=CONNECT_SECONDS)
        except queue.Empty:
            raise Stop("kit-unsafe", "the broker did not answer the connection") from None
        if reason.is_failure:
            raise Stop("kit-unsafe", f"the broker refused the job's connection: {reason}")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.topic == P.telemetry_topic(self.kit):
                body = P.decode_telemetry(msg.payload)
                with_actuators = {**self.actuator_values, **body["values"]}
                self.samples.put_nowait(with_actuators)
            elif "/$ack/" in msg.topic:
                ack = P.decode_ack(msg.payload)
                if ack.get("status") == P.APPLIED:
                    self.applied += 1
                else:
                    self.rejected += 1
            else:
                name = msg.topic.rsplit("/", 1)[-1]
                spec = self.actuators.get(name)
                if spec is not None and msg.payload:
                    self.actuator_values[name] = P.decode_value(spec, msg.payload, name)
        except (P.ProtocolError, queue.Full, ValueError):
            pass  # a malformed message or a controller far behind: skip it

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        if reason.is_failure:  # not authorised (no command right now): the kit never saw it
            self.refused_broker += 1

    # ---- commands

    def send(self, returned: Any) -> None:
        if returned is None:
            return
        if not isinstance(returned, dict):
            self.bad_return(f"returned a {type(returned).__name__}, not a dict or None")
            return
        for name, value in returned.items():
            spec = self.actuators.get(name) if isinstance(name, str) else None
            if spec is None:
                self.bad_return(f"returned {name!r}, which is not an actuator of the kit")
                continue
            if hasattr(value, "item") and callable(value.item):
                value = value.item()  # numpy scalars
            try:
                payload = P.encode_value(spec, value)
            except (TypeError, ValueError):
                payload = None
            if not isinstance(payload, str):  # the kit checks values; the wire needs text
                self.bad_return(f"returned a {type(value).__name__} for {name!r}")
                continue
            if not self.within_rate():
                self.refused_rate += 1
                if self.refused_rate >= max(1, self.rate * FLOOD_SECONDS):
                    raise Stop(
                        "flooded",
                        f"sent commands faster than {self.rate:g} a second; "
                        f"{self.refused_rate} were refused",
                    )
                continue
            command_id = uuid.uuid4().hex
            props = command_properties(
                command_id,
                P.ack_topic(self.kit, self.requester),
                time.time() + COMMAND_DEADLINE_SECONDS,
            )
            assert self.client is not None
            self.client.publish(P.set_topic(self.kit, name), payload, qos=1, properties=props)
            self.sent += 1

    def within_rate(self) -> bool:
        now = time.monotonic()
        while self.recent and now - self.recent[0] >= 1.0:
            self.recent.popleft()
        if len(self.recent) >= self.rate:
            return False
        self.recent.append(now)
        return True

    def bad_return(self, what: str) -> None:
        self.bad_returns += 1
        self.first_bad = self.first_bad or what

    # ---- the loop

    def call(self, step: Callable[..., Any], readings: dict[str, Any], t: float) -> Any:
        signal.setitimer(signal.ITIMER_REAL, self.call_seconds)
        try:
            return step(readings, t)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def drive(self, step: Callable[..., Any]) -> None:
        duration = float(self.spec["duration_s"])
        started = last_sample = last_progress = self.started = time.monotonic()
        while True:
            now = time.monotonic()
            if now - started >= duration:
                return
            if now - last_progress >= 1.0:
                self.progress()
                last_progress = now
            try:
                readings = self.samples.get(timeout=min(0.2, duration - (now - started)))
            except queue.Empty:
                if time.monotonic() - last_sample > KIT_SILENCE_SECONDS:
                    raise Stop("kit-unsafe", "the kit sent no telemetry: it went offline") from None
                continue
            while not self.samples.empty():  # behind: the newest sample only
                readings = self.samples.get_nowait()
            last_sample = time.monotonic()
            try:
                returned = self.call(step, readings, round(last_sample - started, 3))
            except CallTimeout:
                raise Stop(
                    "overran",
                    f"one call of the controller took longer than {self.call_seconds:g} s",
                ) from None
            except OutputLimit as err:
                raise Stop("crashed", str(err)) from None
            except MemoryError:
                raise Stop("memory", "the controller ran out of memory") from None
            except Exception as err:
                raise Stop(
                    "crashed", f"the controller raised {one_line(err)}{where(err)}"
                ) from None
            self.send(returned)

    def progress(self) -> None:
        report({"sent": self.sent, "refused": self.refused})

    @property
    def refused(self) -> int:
        return self.refused_rate + self.refused_broker

    def finish(self) -> None:
        """Give outstanding commands a moment for their PUBACKs, then leave."""
        if self.client is None:
            return
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and self.applied + self.rejected + self.refused_broker < (
            self.sent
        ):
            time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()

    def summary(self) -> str:
        ran = 0.0 if self.started is None else (self.ended or time.monotonic()) - self.started
        parts = [
            f"ran {min(ran, float(self.spec['duration_s'])):.1f} s",
            f"{self.sent} commands sent ({self.applied} applied, {self.rejected} rejected by the "
            "kit)",
        ]
        if self.refused_rate:
            parts.append(f"{self.refused_rate} refused over the rate of {self.rate:g}/s")
        if self.refused_broker:
            parts.append(f"{self.refused_broker} refused by the broker (no command right)")
        if self.bad_returns:
            parts.append(f"{self.bad_returns} bad returns, first: {self.first_bad}")
        return "; ".join(parts)


def on_alarm(_signum: int, _frame: Any) -> None:
    raise CallTimeout


def main() -> int:
    spec = json.loads(sys.stdin.buffer.read(MAX_SPEC_BYTES))
    os.close(0)
    limit = int(spec["limits"]["output_bytes"])
    sys.stdout = BoundedOutput(sys.stdout, limit)  # type: ignore[assignment]
    sys.stderr = BoundedOutput(sys.stderr, limit)  # type: ignore[assignment]
    signal.signal(signal.SIGALRM, on_alarm)
    run = Run(spec)
    outcome, detail = "completed", ""
    try:
        step = load_controller(spec["source"], spec["entry"], spec["inputs"])
        run.connect()
        run.drive(step)
    except Stop as stop:
        outcome, detail = stop.outcome, stop.detail
    except Exception as err:  # the runner's own part failed (or was tampered with)
        outcome, detail = "crashed", f"the run failed: {one_line(err)}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        run.ended = time.monotonic()
    with contextlib.suppress(Exception):  # leaving the broker is best effort
        run.finish()
    summary = run.summary()
    report(
        {
            "outcome": outcome,
            "detail": f"{detail}; {summary}" if detail else summary,
            "sent": run.sent,
            "refused": run.refused,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
