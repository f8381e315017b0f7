"""Fair ordering, assignment around bookings and wait estimates: pure functions."""

from __future__ import annotations

from lab_service import scheduler as S

SLOT = 900.0


def waiting(
    i: int,
    institution: str,
    t: float,
    kit: str | None = "k1",
    model: str | None = None,
    priority: int = 0,
    courses: frozenset[str] = frozenset(),
) -> S.Waiting:
    return S.Waiting(i, f"u{i}", institution, kit, model, priority, t, courses)


def test_fifo_within_one_institution():
    entries = [waiting(3, "a", 30), waiting(1, "a", 10), waiting(2, "a", 20)]
    assert [e.id for e in S.fair_order(entries, {}, SLOT)] == [1, 2, 3]


def test_one_institution_queueing_many_does_not_starve_another():
    # Institution a queued five students before b queued one: b does not wait behind all five.
    entries = [waiting(i, "a", i) for i in range(1, 6)] + [waiting(6, "b", 10)]
    order = [e.id for e in S.fair_order(entries, {}, SLOT)]
    assert order.index(6) == 1


def test_with_equal_use_the_longest_waiting_goes_first():
    # Not strict turns: b's entry came more than a slot after a's two, so both go before it.
    entries = [waiting(1, "a", 0), waiting(2, "a", 10), waiting(3, "b", SLOT + 20)]
    assert [e.id for e in S.fair_order(entries, {"a": 3, "b": 3}, SLOT)] == [1, 2, 3]


def test_each_recent_session_puts_an_institution_a_slot_back():
    entries = [waiting(1, "a", 0), waiting(2, "b", SLOT - 10)]
    assert [e.id for e in S.fair_order(entries, {"a": 1}, SLOT)] == [2, 1]
    # An institution that is not waiting does not count: a and b are compared with each other.
    assert [e.id for e in S.fair_order(entries, {"a": 1, "b": 1, "c": 0}, SLOT)] == [1, 2]


def test_priority_before_fairness():
    entries = [waiting(1, "a", 1), waiting(2, "b", 2, priority=1)]
    assert [e.id for e in S.fair_order(entries, {"b": 9}, SLOT)] == [2, 1]


def test_no_head_of_line_blocking():
    entries = [waiting(1, "a", 1, kit="busy"), waiting(2, "a", 2, kit="k1")]
    grants = S.assign(entries, [S.KitSlot("k1", "m", 0)], [], {}, 0, SLOT, 300)
    assert [(g.entry.id, g.kit_id) for g in grants] == [(2, "k1")]


def test_model_queue_takes_any_free_kit_of_the_model():
    entries = [
        waiting(1, "a", 1, kit=None, model="street"),
        waiting(2, "b", 2, kit=None, model="street"),
    ]
    free = [S.KitSlot("s1", "street", 0), S.KitSlot("s2", "street", 0), S.KitSlot("x", "other", 0)]
    grants = S.assign(entries, free, [], {}, 0, SLOT, 300)
    assert sorted(g.kit_id for g in grants) == ["s1", "s2"]


def test_walk_in_ends_before_a_foreign_booking_and_not_granted_just_before():
    booking = S.BookedSlot("k1", "course-x", starts_at=600, ends_at=4200)
    entry = waiting(1, "a", 0)
    grants = S.assign([entry], [S.KitSlot("k1", "m", 0)], [booking], {}, 0, SLOT, 300)
    assert grants[0].ends_at == 600  # cut short by the booked slot
    late = S.assign([entry], [S.KitSlot("k1", "m", 0)], [booking], {}, 400, SLOT, 300)
    assert late == []  # only 200 s left before the slot: below the 300 s minimum


def test_booked_slot_serves_only_its_course():
    booking = S.BookedSlot("k1", "course-x", starts_at=0, ends_at=3600)
    outsider, member = waiting(1, "a", 0), waiting(2, "b", 5, courses=frozenset({"course-x"}))
    grants = S.assign([outsider, member], [S.KitSlot("k1", "m", 10)], [booking], {}, 10, SLOT, 300)
    assert [(g.entry.id, g.booking) for g in grants] == [(2, booking)]


def test_estimate_uses_holders_remaining_time_and_slot_length():
    kits = [S.KitSlot("k1", "m", free_at=400)]  # the holder has 400 s left
    entries = [waiting(1, "a", 1), waiting(2, "b", 2), waiting(3, "a", 3)]
    est = S.estimate(entries, kits, {}, now=0, slot=SLOT)
    assert est[1] == (1, 400)
    assert est[2] == (2, 400 + SLOT)
    assert est[3] == (3, 400 + 2 * SLOT)


def test_estimate_for_a_kit_out_of_the_pool_is_unknown():
    est = S.estimate([waiting(1, "a", 1, kit="gone")], [S.KitSlot("k1", "m", 0)], {}, 0, SLOT)
    assert est[1] == (0, float("inf"))
