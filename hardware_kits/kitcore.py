"""Kit-side protocol logic, shared by the digital twins and the board firmware.

`KitCore` decides what happens to every command a kit receives (validation against the
descriptor, duplicate ids, deadlines, interlocks, safe state), numbers telemetry and keeps the
counters a kit reports in `$status`. It knows nothing of MQTT libraries, threads or hardware, so
the same code runs in a CPython twin, in the firmware on an ESP32 and in unit tests. Like
`protocol`, it is written in the subset of Python that MicroPython runs.
"""

import time

try:
    from hardware_kits import protocol as P
except ImportError:  # on the board the modules sit side by side
    import protocol as P


class KitCore:
    """One kit's command handling and bookkeeping.

    `apply_hook(target, value)` is called after a command passed every check, before it is
    acknowledged; the twin or the board makes the change there. `target` is an actuator name
    or protocol.SAFE_STATE_PROPERTY (then `value` is the whole safe state)."""

    def __init__(self, kit_id, descriptor, clock=time.time, apply_hook=None, remember=256):
        self.kit_id = kit_id
        self.descriptor = descriptor
        self.actuators = descriptor["actuators"]
        self.interlocks = descriptor.get("interlocks", [])
        self.state = P.safe_state(descriptor)
        self.clock = clock
        self.apply_hook = apply_hook
        self.seq = 0
        self.applied = 0
        self.duplicates = 0
        self.errors = 0
        self.rejections = {}
        self.started = clock()
        self._remember = remember
        self._recent = {}  # command id -> the acknowledgement it got
        self._recent_order = []

    # ------------------------------------------------------------ commands

    def handle_command(self, topic, payload, command_id, deadline_ms):
        """Decide on one command and return its acknowledgement (a dict to publish)."""
        now = self.clock()
        target = "?"
        try:
            if len(payload) > P.MAX_COMMAND_BYTES:
                raise P.ProtocolError(
                    P.R_OVERSIZE, "command is larger than %d bytes" % P.MAX_COMMAND_BYTES
                )
            target = P.command_target(self.kit_id, topic)
            if not command_id or len(command_id) > P.MAX_COMMAND_ID_CHARS:
                raise P.ProtocolError(
                    P.R_MISSING_ID,
                    "a command needs a %s of 1..%d characters"
                    % (P.PROP_COMMAND_ID, P.MAX_COMMAND_ID_CHARS),
                )
            if command_id in self._recent:
                self.duplicates += 1
                ack = dict(self._recent[command_id])
                ack["duplicate"] = True
                return ack
            ack = self._decide(target, payload, command_id, deadline_ms, now)
        except P.ProtocolError as err:
            ack = self._reject(command_id, target, err, now)
            if err.reason in (P.R_MISSING_ID, P.R_OVERSIZE, P.R_WRONG_KIT):
                return ack  # no usable id: nothing to remember
        self._remember_ack(command_id, ack)
        return ack

    def _decide(self, target, payload, command_id, deadline_ms, now):
        deadline = _parse_deadline(deadline_ms)
        if now * 1000 > deadline:
            raise P.ProtocolError(
                P.R_STALE, "deadline passed %d ms ago" % int(now * 1000 - deadline)
            )
        if target == P.SAFE_STATE_PROPERTY:
            value = P.safe_state(self.descriptor)
            self._apply(target, value)
            self.state = dict(value)
        else:
            spec = self.actuators.get(target)
            if spec is None:
                raise P.ProtocolError(
                    P.R_UNKNOWN_ACTUATOR,
                    "kit model %s has no actuator %r" % (self.descriptor["model"], target),
                )
            value = P.decode_value(spec, payload, target)
            self.check_interlocks(target, value)
            self._apply(target, value)
            self.state[target] = value
        self.applied += 1
        return P.make_ack(command_id, target, P.APPLIED, now, value=value)

    def _apply(self, target, value):
        if self.apply_hook is not None:
            self.apply_hook(target, value)

    def _reject(self, command_id, target, err, now):
        self.rejections[err.reason] = self.rejections.get(err.reason, 0) + 1
        return P.make_ack(command_id, target, P.REJECTED, now, reason=err.reason, detail=err.detail)

    def _remember_ack(self, command_id, ack):
        self._recent[command_id] = ack
        self._recent_order.append(command_id)
        if len(self._recent_order) > self._remember:
            del self._recent[self._recent_order.pop(0)]

    # ------------------------------------------------------------ interlocks

    def check_interlocks(self, target, value, kinds=("requires", "exclusive", "index_into")):
        """Raise ProtocolError(interlock) if setting `target` to `value` is unsafe now."""
        for rule in self.interlocks:
            kind = rule["kind"]
            if kind not in kinds:
                continue
            if kind == "requires" and rule["actuator"] == target:
                for other, wanted in rule["when"].items():
                    if self.state.get(other) != wanted:
                        raise P.ProtocolError(
                            P.R_INTERLOCK,
                            "%s can only be set while %s is %s" % (target, other, wanted),
                        )
            elif kind == "exclusive" and rule["actuator"] == target:
                _check_exclusive(rule, value)
            elif kind == "index_into" and rule["actuator"] == target:
                size = len(self.state.get(rule["into"], ()))
                if value >= size:
                    raise P.ProtocolError(
                        P.R_INTERLOCK,
                        "%s=%d but %s has only %d entries" % (target, value, rule["into"], size),
                    )
            elif kind == "index_into" and rule["into"] == target:
                index = self.state.get(rule["actuator"], 0)
                if index >= len(value):
                    raise P.ProtocolError(
                        P.R_INTERLOCK,
                        "%s would drop the entry %s=%d uses" % (target, rule["actuator"], index),
                    )

    # ------------------------------------------------------------ telemetry and status

    def telemetry(self, values, sim=None):
        """Encode the next telemetry sample with the next sequence number."""
        self.seq += 1
        return P.encode_telemetry(self.seq, self.clock(), values, sim)

    def is_safe(self):
        return self.state == P.safe_state(self.descriptor)

    def status(self):
        return {
            "seq": self.seq,
            "uptime": round(self.clock() - self.started, 3),
            "applied": self.applied,
            "duplicates": self.duplicates,
            "rejected": sum(self.rejections.values()),
            "rejections": dict(self.rejections),
            "errors": self.errors,
            "safe": self.is_safe(),
            "actuators": dict(self.state),
        }


def _parse_deadline(deadline_ms):
    if deadline_ms is None or deadline_ms == "":
        raise P.ProtocolError(
            P.R_MISSING_DEADLINE, "a command needs a %s (epoch ms)" % P.PROP_DEADLINE
        )
    try:
        return int(deadline_ms)
    except ValueError:
        raise P.ProtocolError(
            P.R_MISSING_DEADLINE, "%s must be epoch milliseconds" % P.PROP_DEADLINE
        ) from None


def _check_exclusive(rule, stages):
    """No stage of a plan may give green to two movements that conflict."""
    field = rule["field"]
    for i, stage in enumerate(stages):
        green = stage.get(field, ())
        for a, b in rule["conflicts"]:
            if a in green and b in green:
                raise P.ProtocolError(
                    P.R_INTERLOCK, "stage %d would give conflicting greens to %s and %s" % (i, a, b)
                )
