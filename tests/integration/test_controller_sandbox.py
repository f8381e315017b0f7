"""A student's controller in the grading sandbox, on a real twin kit through a real broker.

The job's broker account (`job-test`) gets the kit's command role here, as the lab service
grants it to a job's account for its session. Every run is checked to leave no process behind.
"""

from __future__ import annotations

import json
import os
import re
import stat
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from grader.controller_run import (
    ControllerLimits,
    ControllerOutcome,
    ControllerRun,
    MqttAccess,
    run_controller,
)
from hardware_kits.broker import Broker, command_role
from hardware_kits.kit_runner import KitRunner
from hardware_kits.twins.base import twin_class
from site_config.platform_accounts import SANDBOX_PREFIX

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(os.geteuid() != 0, reason="the controller sandbox needs root"),
]
KIT = "cs-park"
MODEL = "smart-parking"
JOB_ACCOUNT = "job-test"


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def kit(broker: Broker, models: dict) -> Iterator[KitRunner]:
    creds = broker.provision_kits([KIT])
    runner = KitRunner(
        KIT,
        twin_class(MODEL)(models[MODEL], seed=1),
        broker.address(creds[KIT].username),
        rate_hz=10,
    ).start()
    yield runner
    runner.stop()


@pytest.fixture
def access(broker: Broker, kit: KitRunner) -> MqttAccess:
    """The job's account, allowed to command the kit (the lab service's grant, made here)."""
    creds = broker.provision_user(JOB_ACCOUNT, [KIT])
    assert broker.socket_path is not None
    return MqttAccess(
        str(broker.socket_path), broker.host, broker.port, creds.username, creds.password
    )


def controller_processes() -> list[int]:
    """Processes running the controller sandbox's program (and whatever they forked)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"grader.controller_child" in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def run(
    access: MqttAccess,
    source: str,
    entry: str = "controller",
    duration_s: float = 3.0,
    inputs: dict[str, Any] | None = None,
    **limits: Any,
) -> ControllerOutcome:
    limits.setdefault("wall_seconds", duration_s + 15)
    outcome = run_controller(
        ControllerRun(
            source=textwrap.dedent(source),
            entry=entry,
            kit_id=KIT,
            model=MODEL,
            duration_s=duration_s,
            inputs=inputs or {},
            mqtt=access,
            limits=ControllerLimits(**limits),
        )
    )
    assert controller_processes() == [], "a process of the controller outlived its run"
    assert "\n" not in outcome.detail and len(outcome.detail) <= 300
    return outcome


def kit_saw(kit: KitRunner) -> int:
    status = kit.core.status()
    return status["applied"] + status["rejected"] + status["ignored"] + status["duplicates"]


# ---------------------------------------------------------------- a controller drives the kit


def test_function_controller_commands_reach_the_kit(access: MqttAccess, kit: KitRunner) -> None:
    before = kit.core.status()["applied"]
    outcome = run(
        access,
        """
        def controller(readings, t, text="x"):
            if readings.get("mode") != "manual":
                return {"mode": "manual"}
            if readings.get("display") != text:
                return {"display": text}
            return None
        """,
        inputs={"text": "hello sandbox"},
    )
    assert outcome.outcome == "completed", outcome
    assert outcome.commands_sent >= 1
    assert kit.core.status()["actuators"]["display"] == "hello sandbox"
    assert kit.core.status()["applied"] > before


def test_class_controller_steps_and_its_commands_are_applied(
    access: MqttAccess, kit: KitRunner
) -> None:
    before = kit.core.status()["applied"]
    outcome = run(
        access,
        """
        class Gate:
            def __init__(self, every=4):
                self.every, self.n = every, 0

            def step(self, readings, t):
                self.n += 1
                if self.n == 1:
                    return {"mode": "manual"}
                if self.n % self.every == 0:
                    return {"gate": "open" if (self.n // self.every) % 2 else "closed"}
        """,
        entry="Gate",
        inputs={"every": 3},
    )
    assert outcome.outcome == "completed", outcome
    assert outcome.commands_sent >= 5, outcome
    assert kit.core.status()["applied"] - before >= 5
    assert "applied" in outcome.detail


def test_unknown_entry_and_syntax_errors_are_invalid(access: MqttAccess) -> None:
    missing = run(access, "def other(readings, t):\n    pass\n", duration_s=1)
    assert missing.outcome == "invalid" and "'controller'" in missing.detail
    broken = run(access, "def controller(readings, t)\n    pass\n", duration_s=1)
    assert broken.outcome == "invalid" and "line 1" in broken.detail
    not_callable = run(access, "controller = 3\n", duration_s=1)
    assert not_callable.outcome == "invalid"


# ---------------------------------------------------------------- what the sandbox allows


def test_controller_has_no_network_no_root_files_and_runs_as_a_pool_account(
    access: MqttAccess, broker: Broker
) -> None:
    outcome = run(
        access,
        f"""
        import json, os, pwd, socket

        def controller(readings, t):
            seen = {{"user": pwd.getpwuid(os.getuid()).pw_name}}
            try:
                socket.create_connection(("127.0.0.1", {broker.port}), timeout=2).close()
                seen["tcp"] = "connected"
            except OSError as err:
                seen["tcp"] = type(err).__name__
            try:
                socket.getaddrinfo("deb.debian.org", 80)
                seen["dns"] = "resolved"
            except OSError as err:
                seen["dns"] = type(err).__name__
            try:
                open("/etc/shadow").read()
                seen["shadow"] = "read"
            except OSError as err:
                seen["shadow"] = type(err).__name__
            raise RuntimeError(json.dumps(seen))
        """,
    )
    assert outcome.outcome == "crashed", outcome
    seen = json.loads(re.search(r"RuntimeError: (\{.*?\})", outcome.detail).group(1))
    assert seen["user"].startswith(SANDBOX_PREFIX), seen
    assert seen["tcp"] != "connected", seen
    assert seen["dns"] != "resolved", seen
    assert seen["shadow"] == "PermissionError", seen


# ---------------------------------------------------------------- hostile controllers


def test_crashing_controller_is_crashed_and_its_forked_children_are_stopped(
    access: MqttAccess,
) -> None:
    outcome = run(
        access,
        """
        import os, time

        def controller(readings, t):
            if os.fork() == 0:
                os.setsid()
                time.sleep(600)
            return 1 / 0
        """,
    )
    assert outcome.outcome == "crashed"
    assert "ZeroDivisionError" in outcome.detail and "(line 8)" in outcome.detail, outcome


@pytest.mark.parametrize(
    ("body", "limits", "says"),
    [
        ("while True:\n        pass", {"call_seconds": 0.5}, "one call"),
        (
            "while True:\n        try:\n            while True:\n                pass\n"
            "        except BaseException:\n            pass",
            {"wall_seconds": 4.0, "cpu_seconds": 60},
            "wall time",
        ),
        (
            "while True:\n        try:\n            while True:\n                pass\n"
            "        except BaseException:\n            pass",
            {"wall_seconds": 30.0, "cpu_seconds": 2},
            "CPU",
        ),
    ],
    ids=["per-call-limit", "wall-limit-swallowing-timeouts", "cpu-limit"],
)
def test_looping_controller_overruns_within_its_limit(
    access: MqttAccess, body: str, limits: dict, says: str
) -> None:
    started = time.monotonic()
    outcome = run(access, f"def controller(readings, t):\n    {body}\n", duration_s=20, **limits)
    took = time.monotonic() - started
    assert outcome.outcome == "overran" and says in outcome.detail, outcome
    bound = min(limits.get("wall_seconds", 35), limits.get("cpu_seconds", 60) + 3)
    assert took <= bound + 3, f"took {took:.1f} s"


def test_memory_hog_is_stopped_as_memory(access: MqttAccess) -> None:
    outcome = run(
        access,
        """
        blocks = []

        def controller(readings, t):
            while True:
                blocks.append(bytearray(64 << 20))
        """,
        memory_mb=256,
    )
    assert outcome.outcome in ("memory", "crashed"), outcome
    assert outcome.outcome == "memory", outcome  # RLIMIT_AS: a MemoryError the runner sees


def test_flooding_controller_is_refused_over_the_rate_then_stopped(
    access: MqttAccess, kit: KitRunner
) -> None:
    outcome = run(
        access,
        """
        def controller(readings, t):
            return {"mode": "manual", "gate": "open", "display": f"{t:.1f}"}
        """,
        duration_s=8,
        max_commands_per_second=5,
    )
    assert outcome.outcome == "flooded", outcome
    assert outcome.commands_refused >= 50
    # At most the allowed rate went out, for the ~2 s it took to exceed the tolerance.
    assert outcome.commands_sent <= 5 * 4, outcome


def test_wrong_return_types_are_recorded_and_the_run_goes_on(
    access: MqttAccess, kit: KitRunner
) -> None:
    outcome = run(
        access,
        """
        WRONG = [[1, 2], "open", {"no-such-actuator": 1}, {"display": object()}, 7]

        def controller(readings, t, n=[0]):
            n[0] += 1
            if n[0] <= len(WRONG):
                return WRONG[n[0] - 1]
            if n[0] == len(WRONG) + 1:
                return {"mode": "manual"}
            return {"display": "after bad returns"} if n[0] == len(WRONG) + 3 else None
        """,
    )
    assert outcome.outcome == "completed", outcome
    assert "5 bad returns" in outcome.detail and "list" in outcome.detail, outcome
    assert kit.core.status()["actuators"]["display"] == "after bad returns"


def test_revoked_command_right_mid_run_is_refused_by_the_broker(
    access: MqttAccess, broker: Broker, kit: KitRunner
) -> None:
    result: list[ControllerOutcome] = []
    source = """
        def controller(readings, t):
            return {"display": f"tick {t:.1f}"}
    """
    worker = threading.Thread(
        target=lambda: result.append(run(access, source, duration_s=7, max_commands_per_second=20))
    )
    before = kit_saw(kit)
    worker.start()
    time.sleep(3.0)
    assert kit_saw(kit) > before + 5, "the controller's commands did not reach the kit"
    with broker.admin() as dynsec:
        dynsec.call(
            {"command": "removeClientRole", "username": JOB_ACCOUNT, "rolename": command_role(KIT)}
        )
    time.sleep(0.5)  # what was already in flight
    after_revoke = kit_saw(kit)
    worker.join(30)
    assert result, "the run did not end"
    outcome = result[0]
    assert outcome.outcome == "completed", outcome
    assert kit_saw(kit) == after_revoke, "the kit saw commands after the right was revoked"
    assert outcome.commands_refused > 0 and "refused by the broker" in outcome.detail, outcome


def test_a_source_larger_than_a_pipe_reaches_the_child(access: MqttAccess) -> None:
    padding = "# " + "x" * 98 + "\n"
    source = padding * 1000 + "def controller(readings, t, blob):\n    return None\n"
    outcome = run(access, source, duration_s=1, inputs={"blob": "y" * 16000})
    assert outcome.outcome == "completed", outcome


def test_printing_without_end_is_stopped_at_the_output_limit(access: MqttAccess) -> None:
    outcome = run(
        access,
        """
        def controller(readings, t):
            while True:
                print("x" * 10000)
        """,
        output_bytes=100_000,
    )
    assert outcome.outcome == "crashed" and "printed more than 100000" in outcome.detail, outcome


def test_broker_socket_is_open_to_every_account_but_asks_for_credentials(broker: Broker) -> None:
    assert broker.socket_path is not None
    assert stat.S_IMODE(os.stat(broker.socket_path).st_mode) == 0o666
    assert stat.S_IMODE(os.stat(broker.socket_path.parent).st_mode) == 0o755
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id="cs-anon",
        protocol=mqtt.MQTTv5,
        transport="unix",
    )
    client.username_pw_set(JOB_ACCOUNT, "not-the-password")
    reasons: list[Any] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: reasons.append(reason)
    client.connect(str(broker.socket_path))
    client.loop_start()
    try:
        deadline = time.monotonic() + 5
        while not reasons and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    assert reasons and reasons[0].is_failure, reasons
