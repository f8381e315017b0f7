"""The telemetry recorder against the real Mosquitto (dynamic security) and real twins at 20 Hz."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from hardware_kits import protocol as P
from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import connect_client
from hardware_kits.twins.base import twin_class
from lab_service import history as H
from lab_service.history import TelemetryRecorder, history
from lab_service.store import SharingStore, sqlite_url
from tests.conftest import wait_until

pytestmark = pytest.mark.broker

RATE_HZ = 20


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[SharingStore]:
    db = SharingStore(sqlite_url(str(tmp_path / "history.db")))
    yield db
    db.close()


@pytest.fixture()
def lab(broker, models: dict[str, dict], store: SharingStore) -> Iterator[Lab]:
    started = Lab(broker, models, store)
    yield started
    started.close()


class Lab:
    """Kits and recorders of one test, all stopped at its end whatever happened."""

    def __init__(self, broker, models: dict[str, dict], store: SharingStore) -> None:
        self.broker, self.models, self.store = broker, models, store
        self.tag = uuid.uuid4().hex[:6]
        self.runners: list[KitRunner] = []
        self.recorders: list[TelemetryRecorder] = []
        self.kit_creds: dict[str, Any] = {}

    def recorder(self, **options: Any) -> TelemetryRecorder:
        creds = self.broker.provision_user(f"recorder-{self.tag}-{len(self.recorders)}")
        rec = TelemetryRecorder(self.store, self.broker.host, self.broker.port, creds, **options)
        self.recorders.append(rec)
        return rec.start()

    def kit(self, model: str) -> KitRunner:
        kit_id = f"hist-{self.tag}-{len(self.runners)}"
        self.kit_creds.update(self.broker.provision_kits([kit_id]))
        twin = twin_class(model)(self.models[model], seed=1)
        runner = KitRunner(
            kit_id, twin, self.broker.address(self.kit_creds[kit_id].username), rate_hz=RATE_HZ
        )
        self.runners.append(runner)
        return runner.start()

    def close(self) -> None:
        for runner in self.runners:
            runner.stop()
        for rec in self.recorders:
            rec.stop()


def stored_seqs(store: SharingStore, kit_id: str) -> list[int]:
    t = H.TELEMETRY
    with store.transaction() as db:
        return list(db.scalars(select(t.c.seq).where(t.c.kit_id == kit_id).order_by(t.c.id)))


def row_count(store: SharingStore) -> int:
    with store.transaction() as db:
        return db.scalar(select(func.count()).select_from(H.TELEMETRY))


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    predicate.__doc__ = what  # wait_until names the condition from the docstring
    return wait_until(predicate, timeout=timeout)


def published(runner: KitRunner) -> list[int]:
    """Every seq the kit published: its sequence numbers run 1, 2, … without gaps."""
    return list(range(1, runner.core.seq + 1))


def test_every_published_sample_is_stored_exactly_once_in_order(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real_insert = H.insert_rows
    monkeypatch.setattr(
        H, "insert_rows", lambda db, rows: (writes.append(len(rows)), real_insert(db, rows))
    )
    rec = lab.recorder()
    prunes: list[float] = []
    real_prune = rec.prune
    rec.prune = lambda now=None: (prunes.append(now), real_prune(now))[1]
    kits = [lab.kit("street-lighting"), lab.kit("environment-station")]
    time.sleep(3)
    for runner in kits:
        runner.stop()  # waits until its last publish reached the broker
    total = sum(runner.core.seq for runner in kits)
    wait_for(lambda: rec.received >= total, "the recorder received every sample")
    rec.stop()

    for runner in kits:
        assert runner.core.seq >= 2 * RATE_HZ, "the twin should have run ~3 s at 20 Hz"
        assert stored_seqs(lab.store, runner.kit_id) == published(runner)
        rows = history(lab.store, runner.kit_id, 0, float("inf"))
        assert [r["seq"] for r in rows] == published(runner)
        assert set(rows[-1]["values"]) == set(runner.descriptor["sensors"])
    # The recorder hears every kit on the session's broker: other tests' kits may still talk.
    assert rec.recorded >= total
    assert (rec.malformed, rec.duplicates, rec.dropped) == (0, 0, 0)
    # Batched: a few transactions of many rows each, not one per sample.
    assert sum(writes) == rec.recorded and len(writes) <= rec.recorded / 10, writes
    assert len(prunes) == 1  # at most once a minute, and the writer did call it


def test_malformed_telemetry_from_a_kit_is_counted_and_recording_goes_on(lab: Lab) -> None:
    rec = lab.recorder()
    runner = lab.kit("smart-parking")
    wait_for(lambda: rec.recorded >= 5, "the first samples were written")
    # The kit's own account may publish anything under its own tree, garbage included.
    creds = lab.kit_creds[runner.kit_id]
    rogue = connect_client(lab.broker.host, lab.broker.port, creds, f"rogue-{runner.kit_id}")
    try:
        for payload in (b"not json", b'{"seq": "x", "ts": 1, "values": {}}', b"\xff\xfe"):
            rogue.publish(P.telemetry_topic(runner.kit_id), payload, qos=1).wait_for_publish(5)
    finally:
        rogue.disconnect()
        rogue.loop_stop()
    wait_for(lambda: rec.malformed == 3, "the recorder counted the three malformed messages")
    seq_at_garbage = runner.core.seq
    wait_for(lambda: rec.recorded >= seq_at_garbage + RATE_HZ, "recording went on")
    runner.stop()
    wait_for(lambda: rec.received >= runner.core.seq, "the recorder received every sample")
    rec.stop()

    assert stored_seqs(lab.store, runner.kit_id) == published(runner)
    assert rec.malformed == 3


def test_a_full_batch_is_written_without_waiting_for_the_timer(lab: Lab) -> None:
    lab.recorder(flush_every=60, batch_size=10)
    lab.kit("intersection")
    wait_for(lambda: row_count(lab.store) >= 10, "a batch was written well before 60 s", timeout=5)


def test_stop_writes_what_is_still_buffered(lab: Lab) -> None:
    rec = lab.recorder(flush_every=60, batch_size=1_000_000)
    runner = lab.kit("street-lighting")
    wait_for(lambda: rec.received >= RATE_HZ, "a second of samples arrived")
    runner.stop()
    wait_for(lambda: rec.received >= runner.core.seq, "the recorder received every sample")
    assert row_count(lab.store) == 0  # nothing written yet: the timer is a minute away
    rec.stop()
    assert stored_seqs(lab.store, runner.kit_id) == published(runner)
    assert rec.pending == 0
