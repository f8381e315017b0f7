"""Telemetry history: a recorder that stores every kit's `$telemetry`, and queries over it.

The same recorder keeps each kit's picture at a reduced rate: frames of the `full` camera
stream, at most `frame_record_fps` per kit (default one a second), in `camera_frames`, for
`frame_retention_s`; `frames` reads them back. Frames that break the protocol (oversize, not
JPEG, bad stamps) are dropped and counted per kit in `dropped_frames`.

The recorder is an observer on the broker. paho's network thread only decodes and buffers (about
ten microseconds per message); a writer thread of its own inserts the buffer in batches, one
transaction per batch, because a transaction per message would cost most of the time in commits.
Students then read a kit's history (for example yesterday's) from a notebook with `history`, and
export it with `history_csv` or `history_json`.

Times are epoch seconds as the kit stamped them; a time range is half-open, [start, end).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from sqlalchemy import Delete, delete, func, insert, select
from sqlalchemy.exc import (
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from hardware_kits import protocol as P
from hardware_kits.mqtt import Credentials, connect_client, user_properties
from lab_service.store import CameraFrameRow, SharingStore, TelemetryRow

log = logging.getLogger(__name__)

TELEMETRY = TelemetryRow.__table__
FRAMES = CameraFrameRow.__table__
DEFAULT_FRAME_RECORD_FPS = 1.0
MAX_FRAME_BUFFER = 600  # frames waiting for the writer (a minute of ten kits at 1/s)
DAY_S = 86_400.0
DEFAULT_RETENTION_S = 7 * DAY_S
PRUNE_EVERY_S = 60.0
MAX_SAMPLE_BYTES = 64 * 1024  # far above any kit's sample; keeps one bad message from bloating
MAX_KIT_ID_CHARS = 64  # the column's width, which PostgreSQL enforces
INT32 = 2**31  # seq is an INTEGER column: 32 bits on PostgreSQL
RECENT_PER_KIT = 64  # above paho's 20 in-flight QoS 1 messages a kit may resend on reconnect
# Errors after which the same batch may well succeed later (database down, locked, busy).
TRANSIENT_ERRORS = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)


# ---------------------------------------------------------------- decoding


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def decode_sample(topic: str, payload: bytes) -> dict[str, Any]:
    """A telemetry message as a row for the telemetry table; ProtocolError if it is not one.

    Stricter than `protocol.decode_telemetry`, which accepts NaN and Infinity: SQLite would store
    a NaN time as NULL and PostgreSQL refuses NaN in JSON, failing the whole batch."""
    kit_id, rest = P.split_topic(topic)
    if kit_id is None or rest != "$telemetry" or len(kit_id) > MAX_KIT_ID_CHARS:
        raise P.ProtocolError(P.R_MALFORMED, "not a telemetry topic: " + topic)
    if len(payload) > MAX_SAMPLE_BYTES:
        raise P.ProtocolError(P.R_OVERSIZE, f"telemetry larger than {MAX_SAMPLE_BYTES} bytes")
    try:
        body = json.loads(payload, parse_constant=_reject_constant)
    except ValueError:  # also UnicodeDecodeError
        raise P.ProtocolError(P.R_MALFORMED, "telemetry is not JSON") from None
    if not isinstance(body, dict):
        raise P.ProtocolError(P.R_MALFORMED, "telemetry must be a JSON object")
    seq, ts, values = body.get("seq"), body.get("ts"), body.get("values")
    if type(seq) is not int or not -INT32 <= seq < INT32:
        raise P.ProtocolError(P.R_MALFORMED, "telemetry needs a 32-bit integer seq")
    if type(ts) not in (int, float) or not math.isfinite(ts):
        raise P.ProtocolError(P.R_MALFORMED, "telemetry needs a finite numeric ts")
    if not isinstance(values, dict):
        raise P.ProtocolError(P.R_MALFORMED, "telemetry needs an object of values")
    return {"kit_id": kit_id, "seq": seq, "ts": float(ts), "values": values}


class _RecentSamples:
    """The last few (seq, ts) of each kit, to drop exact copies that QoS 1 may deliver twice."""

    def __init__(self, size: int = RECENT_PER_KIT) -> None:
        self.size = size
        self._kits: dict[str, tuple[deque[tuple[int, float]], set[tuple[int, float]]]] = {}

    def seen(self, kit_id: str, seq: int, ts: float) -> bool:
        """True for a sample already seen; otherwise remember it and return False."""
        order, members = self._kits.setdefault(kit_id, (deque(), set()))
        key = (seq, ts)
        if key in members:
            return True
        order.append(key)
        members.add(key)
        if len(order) > self.size:
            members.discard(order.popleft())
        return False


# ---------------------------------------------------------------- recorder


class TelemetryRecorder:
    """Records every kit's telemetry into a `SharingStore`, in batches, from its own writer thread.

    Counters: `received` (accepted into the buffer), `recorded` (written), `malformed` (not
    telemetry, dropped), `duplicates` (exact copies, dropped), `dropped` (lost to the buffer
    cap or refused by the database), `write_errors` (failed writes, retried)."""

    def __init__(
        self,
        store: SharingStore,
        host: str,
        port: int,
        credentials: Credentials,
        *,
        flush_every: float = 0.5,
        batch_size: int = 500,
        max_buffer: int = 100_000,
        retention_s: float | None = DEFAULT_RETENTION_S,
        client_id: str | None = None,
        clock: Callable[[], float] = time.time,
        tls: dict[str, Any] | None = None,
        frame_record_fps: float | None = DEFAULT_FRAME_RECORD_FPS,
        frame_retention_s: float | None = DEFAULT_RETENTION_S,
    ) -> None:
        if flush_every <= 0 or batch_size < 1 or max_buffer < 1:
            raise ValueError("flush_every must be positive, batch_size and max_buffer at least 1")
        if retention_s is not None and retention_s <= 0:
            raise ValueError("retention_s must be positive, or None to keep history forever")
        if frame_record_fps is not None and frame_record_fps <= 0:
            raise ValueError("frame_record_fps must be positive, or None to record no frames")
        if frame_retention_s is not None and frame_retention_s <= 0:
            raise ValueError("frame_retention_s must be positive, or None to keep frames forever")
        self.frame_record_fps = frame_record_fps
        self.frame_retention_s = frame_retention_s
        self.frames_recorded = 0
        self.dropped_frames: dict[str, int] = {}  # by kit: oversize, not JPEG, bad stamps
        self._frames: deque[dict[str, Any]] = deque(maxlen=MAX_FRAME_BUFFER)
        self._last_frame_ts: dict[str, float] = {}
        self.store = store
        self.host, self.port, self.credentials = host, port, credentials
        self.client_id = client_id or f"history-recorder-{uuid.uuid4().hex[:8]}"
        self.flush_every = flush_every
        self.batch_size = batch_size
        self.max_buffer = max_buffer
        self.retention_s = retention_s
        self.clock = clock
        self.tls = tls or {}  # connect_client's tls/ca: the broker's mqtts listener
        self.received = self.recorded = self.malformed = self.duplicates = 0
        self.dropped = self.write_errors = 0
        self._buffer: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()  # buffer and `dropped`, shared by paho's thread and ours
        self._write_lock = threading.Lock()  # one writer at a time keeps rows in arrival order
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._recent = _RecentSamples()
        self._next_prune = -math.inf
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None

    @property
    def pending(self) -> int:
        """Samples buffered but not written yet."""
        return len(self._buffer)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> TelemetryRecorder:
        """Start the writer, then subscribe; returns once the broker confirmed the subscription."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()
        try:
            self._client = connect_client(
                self.host,
                self.port,
                self.credentials,
                self.client_id,
                on_message=self._on_message,
                subscribe=self._subscriptions(),
                **self.tls,
            )
        except Exception:
            self._stop_writer()
            raise
        return self

    def stop(self) -> None:
        """Unsubscribe, stop the writer and write whatever is still buffered."""
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._stop_writer()
        self.flush()

    def _stop_writer(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> TelemetryRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _subscriptions(self) -> list[tuple[str, int]]:
        topics = [(P.all_kits("$telemetry"), 1)]
        if self.frame_record_fps is not None:
            # Only the full stream: the broker sends the recorder no thumbnails.
            topics.append((P.all_kits(P.CAMERA_PROPERTY + "/" + P.STREAM_FULL), 0))
        return topics

    # ---------------------------------------------------------------- paho's thread

    def _on_message(self, _client: Any, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/" + P.CAMERA_PROPERTY + "/" + P.STREAM_FULL):
            self.take_frame(msg.topic, msg.payload, user_properties(msg.properties))
            return
        try:
            row = decode_sample(msg.topic, msg.payload)
        except Exception:  # anything a kit sends must not reach paho's thread
            self.malformed += 1
            return
        if self._recent.seen(row["kit_id"], row["seq"], row["ts"]):
            self.duplicates += 1
            return
        self._enqueue(row)

    def take_frame(self, topic: str, payload: bytes, props: dict[str, str]) -> bool:
        """Keep a received frame if its kit's last kept one is 1/frame_record_fps old; drop and
        count one that breaks the protocol. True if kept."""
        try:
            frame = P.decode_frame(topic, payload, props)
        except P.ProtocolError:
            kit_id = P.split_topic(topic)[0] or "?"
            with self._lock:
                self.dropped_frames[kit_id] = self.dropped_frames.get(kit_id, 0) + 1
            return False
        kit_id = frame["kit"]
        if self.frame_record_fps is None or len(kit_id) > MAX_KIT_ID_CHARS:
            return False
        if not -INT32 <= frame["seq"] < INT32:
            return False
        last = self._last_frame_ts.get(kit_id, -math.inf)
        if frame["ts"] - last < 1.0 / self.frame_record_fps and frame["ts"] >= last:
            return False  # a kit clock stepping back restarts the rate
        self._last_frame_ts[kit_id] = frame["ts"]
        row = {"kit_id": kit_id, "ts": frame["ts"], "seq": frame["seq"]}
        row.update(stream=frame["stream"], jpeg=frame["jpeg"])
        with self._lock:
            self._frames.append(row)  # a full buffer loses its oldest frame
        return True

    def _enqueue(self, row: dict[str, Any]) -> None:
        with self._lock:
            if len(self._buffer) >= self.max_buffer:
                self._buffer.popleft()  # the oldest go first: recent data matters most
                self.dropped += 1
            self._buffer.append(row)
            self.received += 1
            full = len(self._buffer) >= self.batch_size
        if full and not self._wake.is_set():
            self._wake.set()

    # ---------------------------------------------------------------- writer

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_every)
            self._wake.clear()
            if self._stopping.is_set():
                break  # stop() writes the rest itself
            try:
                self.flush()
                self._maybe_prune()
            except Exception:  # the writer must outlive a database outage
                self.write_errors += 1
                log.exception("history: writing telemetry failed; retrying")
                self._stopping.wait(self.flush_every)  # back off instead of spinning

    def flush(self) -> int:
        """Write what is buffered now, `batch_size` rows per transaction; return rows written.

        On a transient database error the unwritten rows go back to the buffer and it raises."""
        written = 0
        with self._write_lock:
            todo = len(self._buffer)  # not what arrives meanwhile: flush must end
            while todo > 0:
                batch = self._take(min(todo, self.batch_size))
                if not batch:
                    break
                todo -= len(batch)
                written += self._write(batch)
            self._write_frames()
        return written

    def _write_frames(self) -> None:
        with self._lock:
            rows = list(self._frames)
            self._frames.clear()
        if not rows:
            return
        try:
            with self.store.transaction() as db:
                db.execute(insert(FRAMES), rows)
        except TRANSIENT_ERRORS:
            with self._lock:
                self._frames.extendleft(reversed(rows))
            raise
        self.frames_recorded += len(rows)

    def _take(self, count: int) -> list[dict[str, Any]]:
        with self._lock:
            return [self._buffer.popleft() for _ in range(min(count, len(self._buffer)))]

    def _write(self, batch: list[dict[str, Any]]) -> int:
        try:
            insert_rows(self.store, batch)
        except TRANSIENT_ERRORS:
            self._requeue(batch)
            raise
        except SQLAlchemyError:
            log.exception("history: the database refused a batch; writing it row by row")
            return self._write_one_by_one(batch)
        self.recorded += len(batch)
        return len(batch)

    def _write_one_by_one(self, batch: list[dict[str, Any]]) -> int:
        """Isolate the rows the database refuses, so that one cannot sink the whole batch."""
        written = 0
        for i, row in enumerate(batch):
            try:
                insert_rows(self.store, [row])
            except TRANSIENT_ERRORS:
                self._requeue(batch[i:])
                raise
            except SQLAlchemyError as err:
                log.warning(
                    "history: dropped a sample of %s: %s",
                    row.get("kit_id"),
                    str(err).splitlines()[0],
                )
                with self._lock:
                    self.dropped += 1
            else:
                written += 1
        self.recorded += written
        return written

    def _requeue(self, batch: list[dict[str, Any]]) -> None:
        """Put unwritten rows back in front, keeping the cap (the oldest are dropped first)."""
        with self._lock:
            self._buffer.extendleft(reversed(batch))
            excess = len(self._buffer) - self.max_buffer
            for _ in range(excess):
                self._buffer.popleft()
            self.dropped += max(excess, 0)

    # ---------------------------------------------------------------- retention

    def _maybe_prune(self) -> None:
        if self.retention_s is None and self.frame_retention_s is None:
            return
        now = self.clock()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_S  # also after a failure: retry in a minute
        deleted = self.prune(now)
        if deleted:
            log.info("history: pruned %d samples older than %.0f s", deleted, self.retention_s)

    def prune(self, now: float | None = None) -> int:
        """Delete samples older than `now - retention_s` and frames older than
        `now - frame_retention_s` (one statement each); return how many samples went."""
        now = self.clock() if now is None else now
        if self.frame_retention_s is not None:
            with self._write_lock:
                delete_frames_before(self.store, now - self.frame_retention_s)
        if self.retention_s is None:
            return 0
        with self._write_lock:
            return delete_before(self.store, now - self.retention_s)


# ---------------------------------------------------------------- storage


def insert_rows(store: SharingStore, rows: Sequence[dict[str, Any]]) -> None:
    """Insert telemetry rows ({kit_id, seq, ts, values}) in one transaction (an executemany)."""
    with store.transaction() as db:
        db.execute(insert(TELEMETRY), list(rows))


def recorded_kits(store: SharingStore) -> list[str]:
    """The kits that have history, in order, by a loose index scan: one index probe per kit.

    (A plain DISTINCT would read the whole (kit_id, ts) index: millions of entries after a week.)
    Portable: SQLite and PostgreSQL both run WITH RECURSIVE."""
    first, later = TELEMETRY.alias("first_kit"), TELEMETRY.alias("later_kit")
    walk = select(func.min(first.c.kit_id).label("kit_id")).cte("kits", recursive=True)
    following = select(func.min(later.c.kit_id)).where(later.c.kit_id > walk.c.kit_id)
    kits = walk.union_all(select(following.scalar_subquery()).where(walk.c.kit_id.is_not(None)))
    with store.transaction() as db:
        return list(db.scalars(select(kits.c.kit_id).where(kits.c.kit_id.is_not(None))))


def delete_before(store: SharingStore, cutoff: float) -> int:
    """Delete every sample with ts < cutoff, in one statement; return how many went."""
    kit_ids = recorded_kits(store)
    if not kit_ids:
        return 0
    with store.transaction() as db:
        return db.execute(prune_statement(kit_ids, cutoff)).rowcount


def prune_statement(kit_ids: Sequence[str], cutoff: float) -> Delete:
    """DELETE … WHERE kit_id IN (<each kit>) AND ts < cutoff: a range per kit on the (kit_id, ts)
    index. A bare `ts < cutoff` cannot use that index (kit_id comes first) and reads the whole
    table; an IN (subquery) leaves PostgreSQL guessing, and it guesses a table scan."""
    return delete(TELEMETRY).where(TELEMETRY.c.kit_id.in_(kit_ids), TELEMETRY.c.ts < cutoff)


def delete_frames_before(store: SharingStore, cutoff: float) -> int:
    """Delete every recorded frame with ts < cutoff; return how many went."""
    with store.transaction() as db:
        kit_ids = list(db.scalars(select(FRAMES.c.kit_id).distinct()))
        if not kit_ids:
            return 0
        statement = delete(FRAMES).where(FRAMES.c.kit_id.in_(kit_ids), FRAMES.c.ts < cutoff)
        return db.execute(statement).rowcount


# ---------------------------------------------------------------- queries


class RecordedFrame(NamedTuple):
    ts: float  # the kit's clock, epoch seconds
    seq: int  # the telemetry sample whose state the frame shows
    jpeg: bytes


def frames(
    store: SharingStore, kit_id: str, start: float, end: float, limit: int = 10_000
) -> list[RecordedFrame]:
    """A kit's recorded frames with start <= ts < end, oldest first, at most `limit`."""
    _check_range(start, end)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    statement = (
        select(FRAMES.c.ts, FRAMES.c.seq, FRAMES.c.jpeg)
        .where(FRAMES.c.kit_id == kit_id, FRAMES.c.ts >= start, FRAMES.c.ts < end)
        .order_by(FRAMES.c.ts, FRAMES.c.id)
        .limit(limit)
    )
    with store.transaction() as db:
        return [RecordedFrame(ts, seq, bytes(jpeg)) for ts, seq, jpeg in db.execute(statement)]


def history(
    store: SharingStore,
    kit_id: str,
    start: float,
    end: float,
    sensors: Iterable[str] | str | None = None,
    limit: int = 100_000,
    descriptor: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """A kit's samples with start <= ts < end, oldest first, at most `limit` of them.

    Each row is {"ts", "seq", "values"}; `values` holds only the `sensors` asked for (all when
    None) that the sample has. With the kit's `descriptor`, unknown sensor names are an error."""
    _check_range(start, end)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    wanted = _check_sensors(sensors, descriptor)
    statement = (
        select(TELEMETRY.c.ts, TELEMETRY.c.seq, TELEMETRY.c["values"])
        .where(TELEMETRY.c.kit_id == kit_id, TELEMETRY.c.ts >= start, TELEMETRY.c.ts < end)
        .order_by(TELEMETRY.c.ts, TELEMETRY.c.id)  # id: arrival order for equal times
        .limit(limit)
    )
    with store.transaction() as db:
        result = db.execute(statement).all()
    if wanted is None:
        return [{"ts": ts, "seq": seq, "values": values} for ts, seq, values in result]
    return [
        {"ts": ts, "seq": seq, "values": {k: values[k] for k in wanted if k in values}}
        for ts, seq, values in result
    ]


def _check_range(start: float, end: float) -> None:
    if math.isnan(start) or math.isnan(end):  # NaN compares false with everything
        raise ValueError(f"start and end must be epoch seconds, not {start} and {end}")
    if end < start:
        raise ValueError(f"end {end} is before start {start} (epoch seconds)")


def _check_sensors(
    sensors: Iterable[str] | str | None, descriptor: dict[str, Any] | None
) -> list[str] | None:
    if sensors is None:
        return None
    wanted = [sensors] if isinstance(sensors, str) else list(sensors)
    if descriptor is not None:
        known = descriptor["sensors"]
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise ValueError(
                f"unknown sensor(s) of a {descriptor.get('model', 'kit')} kit: "
                f"{', '.join(unknown)} (it has {', '.join(known)})"
            )
    return wanted


# ---------------------------------------------------------------- export


def history_csv(rows: Iterable[dict[str, Any]], sensors: Sequence[str]) -> str:
    """CSV with a header `ts,seq,time,<sensor>...`; `time` is ISO-8601 UTC.

    Booleans are written as 0/1, JSON values (lists, objects) as compact JSON, and a sensor
    missing from a sample as an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["ts", "seq", "time", *sensors])
    for row in rows:
        values = row["values"]
        writer.writerow(
            [
                repr(float(row["ts"])),
                row["seq"],
                _iso(row["ts"]),
                *(_csv_cell(values.get(name)) for name in sensors),
            ]
        )
    return out.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "1" if value else "0"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _iso(ts: float) -> str:
    when = dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def history_json(rows: Iterable[dict[str, Any]]) -> str:
    """The rows as a compact JSON array."""
    return json.dumps(list(rows), separators=(",", ":"))
