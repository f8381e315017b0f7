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
    or one of protocol.WHOLE_KIT_PROPERTIES (then `value` is every actuator's value: the safe
    state, or the state at rest).

    `fault` is None, or a short text the twin or board sets while a hardware fault (a tripped
    conflict monitor) holds the kit in its safe state: then the kit refuses to go to rest."""

    def __init__(self, kit_id, descriptor, clock=time.time, apply_hook=None, remember=256):
        self.kit_id = kit_id
        self.descriptor = descriptor
        self.actuators = descriptor["actuators"]
        self.interlocks = descriptor.get("interlocks", [])
        self.state = P.safe_state(descriptor)
        self.fault = None
        self.clock = clock
        self.apply_hook = apply_hook
        self.seq = 0
        self.applied = 0
        self.duplicates = 0
        self.errors = 0
        self.ignored = 0  # empty /set without the lab's properties: Homie deletes, not commands
        self.plain_sets = 0
        self.rejections = {}
        self.started = clock()
        self._remember = remember
        self._recent = {}  # command id -> the acknowledgement it got
        self._recent_order = []

    # ------------------------------------------------------------ commands

    def receive(self, topic, payload, user_props, response_topic=None):
        """Everything a kit decides about one received message, without I/O, for the twins and
        the firmware alike. Returns None for a message it ignores, else (reply topic,
        acknowledgement) to publish. Never raises: whatever a client sends is answered.

        `user_props` maps MQTT v5 user property names to values; `response_topic` is the
        message's Response Topic (None if absent)."""
        command_id = user_props.get(P.PROP_COMMAND_ID)
        deadline_ms = user_props.get(P.PROP_DEADLINE)
        plain = command_id is None and deadline_ms is None
        if plain and not payload:
            # Homie's delete of a retained message (the lab service clears retained commands
            # so): no command at all, so no acknowledgement and no rejection.
            self.ignored += 1
            return None
        reply, reply_ok = self.reply_topic(response_topic)
        try:
            if not reply_ok:
                # Refused before anything is applied: the answer cannot go where it was asked.
                return reply, self._reject(
                    _usable_id(command_id),
                    self._target_or_unknown(topic),
                    P.ProtocolError(
                        P.R_BAD_RESPONSE_TOPIC,
                        "the response topic is not a topic name (wildcard, NUL or empty)",
                    ),
                    self.clock(),
                )
            if plain:
                return reply, self.handle_plain_set(topic, payload)
            return reply, self.handle_command(topic, payload, command_id, deadline_ms)
        except Exception as err:  # a kit must survive anything a client sends
            self.errors += 1
            return reply, self._reject(
                _usable_id(command_id),
                self._target_or_unknown(topic),
                P.ProtocolError(P.R_KIT_ERROR, "the kit failed on this command: %r" % (err,)),
                self.clock(),
            )

    def reply_topic(self, wanted):
        """(where the acknowledgement goes, whether the requester's Response Topic is usable).

        Replies go only under the kit's own `$ack` tree (the kit's rights end there, and a reply
        can never land on a `.../set` topic and come back as a command); any other usable topic,
        or none, gets the public `$ack/anonymous`. A topic with a wildcard cannot be published
        to at all: the command is refused and the refusal goes to `$ack/anonymous`."""
        fallback = P.ack_topic(self.kit_id, "anonymous")
        if wanted is None:
            return fallback, True
        if not P.is_topic_name(wanted):
            return fallback, False
        if wanted.startswith(P.ack_topic(self.kit_id, "")):
            return wanted, True
        return fallback, True

    def _target_of(self, topic, payload):
        """The actuator a command's topic names; ProtocolError if the command is too large
        or names none of this kit's."""
        if len(payload) > P.MAX_COMMAND_BYTES:
            raise P.ProtocolError(
                P.R_OVERSIZE, "command is larger than %d bytes" % P.MAX_COMMAND_BYTES
            )
        return P.command_target(self.kit_id, topic)

    def handle_command(self, topic, payload, command_id, deadline_ms):
        """Decide on one lab command (with `command-id` and `deadline`) and return its
        acknowledgement (a dict to publish)."""
        now = self.clock()
        target = "?"
        try:
            target = self._target_of(topic, payload)
            if (
                not isinstance(command_id, str)
                or not command_id
                or len(command_id) > P.MAX_COMMAND_ID_CHARS
            ):
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
            ack = self._decide(target, payload, command_id, _parse_deadline(deadline_ms), now)
        except P.ProtocolError as err:
            if err.reason in (P.R_MISSING_ID, P.R_OVERSIZE, P.R_WRONG_KIT):
                # no usable id: nothing to remember, and the ack echoes no oversized one
                return self._reject(_usable_id(command_id), target, err, now)
            ack = self._reject(command_id, target, err, now)
        self._remember_ack(command_id, ack)
        return ack

    def handle_plain_set(self, topic, payload):
        """A plain Homie 5 `/set` (no command-id, no deadline): applied once, as delivered.

        Its freshness is the broker's to bound: a kit keeps no session and takes no retained
        command, so the broker delivers a plain set only live, and drops it if its MQTT v5
        message expiry passes first. The kit names it "homie-<start ms>-<n>" in its answer."""
        now = self.clock()
        self.plain_sets += 1
        command_id = "%s%d-%d" % (P.PLAIN_SET_ID_PREFIX, int(self.started * 1000), self.plain_sets)
        target = "?"
        try:
            target = self._target_of(topic, payload)
            return self._decide(target, payload, command_id, None, now)
        except P.ProtocolError as err:
            return self._reject(command_id, target, err, now)

    def _decide(self, target, payload, command_id, deadline, now):
        """Apply a command whose id is settled; `deadline` in epoch ms, None for a plain set."""
        if deadline is not None and now * 1000 > deadline:
            raise P.ProtocolError(
                P.R_STALE, "deadline passed %d ms ago" % int(now * 1000 - deadline)
            )
        if deadline is not None and deadline - now * 1000 > P.MAX_DEADLINE_AHEAD_MS:
            raise P.ProtocolError(
                P.R_DEADLINE_TOO_FAR,
                "deadline is more than %d s ahead" % (P.MAX_DEADLINE_AHEAD_MS // 1000),
            )
        if target in P.WHOLE_KIT_PROPERTIES:
            if target == P.AT_REST_PROPERTY and self.fault:
                raise P.ProtocolError(
                    P.R_INTERLOCK, "the kit stays in its safe state after a fault: " + self.fault
                )
            value = P.whole_state(self.descriptor, target)
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

    def _target_or_unknown(self, topic):
        try:
            return P.command_target(self.kit_id, topic)
        except Exception:  # only a label for the answer: never let it fail the reply
            return "?"

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

    def is_at_rest(self):
        """In the state at rest (for a model that rests in its safe state: safe, no fault)."""
        return self.fault is None and self.state == P.at_rest_state(self.descriptor)

    def status(self):
        return {
            "seq": self.seq,
            "uptime": round(self.clock() - self.started, 3),
            "applied": self.applied,
            "duplicates": self.duplicates,
            "rejected": sum(self.rejections.values()),
            "rejections": dict(self.rejections),
            "errors": self.errors,
            "ignored": self.ignored,
            "safe": self.is_safe(),
            "at_rest": self.is_at_rest(),
            "fault": self.fault,
            "actuators": dict(self.state),
        }


def _parse_deadline(deadline_ms):
    """The deadline in epoch ms: ASCII digits only (int() would take spaces, signs, "_" and
    other scripts' digits), at most MAX_DEADLINE_DIGITS of them."""
    if deadline_ms is None or deadline_ms == "":
        raise P.ProtocolError(
            P.R_MISSING_DEADLINE, "a command needs a %s (epoch ms)" % P.PROP_DEADLINE
        )
    if not _is_ascii_digits(deadline_ms) or len(deadline_ms) > P.MAX_DEADLINE_DIGITS:
        raise P.ProtocolError(
            P.R_MISSING_DEADLINE,
            "%s must be epoch milliseconds (1..%d ASCII digits)"
            % (P.PROP_DEADLINE, P.MAX_DEADLINE_DIGITS),
        )
    return int(deadline_ms)


def _usable_id(command_id):
    """The id to echo in an answer: the client's if it is one, else None (no 64 kB echoes)."""
    if isinstance(command_id, str) and 0 < len(command_id) <= P.MAX_COMMAND_ID_CHARS:
        return command_id
    return None


def _is_ascii_digits(text):
    if not isinstance(text, str) or not text:
        return False
    return all("0" <= ch <= "9" for ch in text)


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
