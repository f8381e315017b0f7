"""The lab service's message catalogue: every code in both languages with the same fields,
and every refusal the service can raise worded in Russian and English."""

from __future__ import annotations

import re
import string

import pytest
from pydantic import ValidationError

from lab_service.api_http import error_body, refusal
from lab_service.api_schemas import ApiError, BookingCreate, QueueRequest, validation_problem
from lab_service.messages import CATALOGUE, Coded, message, render
from lab_service.service import Conflict, SharingError

CYRILLIC = re.compile("[а-яё]", re.IGNORECASE)
# Russian words that stay Latin: codes of the protocol and names a person types.
LATIN_ONLY = {"text", "history-invalid", "v-located", "v-plain", "v-other"}


def fields_of(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_every_code_has_both_languages_with_the_same_fields(code):
    english, russian = CATALOGUE[code]
    assert english.strip() and russian.strip()
    if english != "{msg}":  # else English is pydantic's own line; Russian, its context's fields
        assert fields_of(english) >= fields_of(russian) - {"status"}, code
        assert fields_of(russian) >= fields_of(english) - {"reason"}, code
    if code not in LATIN_ONLY:
        assert CYRILLIC.search(russian), f"{code}: not Russian: {russian!r}"


def test_fields_are_formatted_in_each_language():
    assert render("booking-too-soon", {"minutes": "60"}) == (
        "bookings must start at least 60 minutes ahead; use the queue for now"
    )
    assert render("booking-too-soon", {"minutes": "60"}, "ru") == (
        "бронь должна начинаться не раньше чем через 60 мин; сейчас встаньте в очередь"
    )
    # a field that is itself a message is worded in the same language
    fields = {"entry": 7, "state": message("state-served")}
    assert render("entry-not-waiting", fields) == "queue entry 7 is no longer waiting (served)"
    assert (
        render("entry-not-waiting", fields, "ru") == "запись 7 в очереди больше не ждёт (обслужена)"
    )
    # any other language is English; a missing field or unknown code never fails
    assert render("no-kit", {"kit": "k1"}, "de") == "no kit k1"
    assert render("no-kit", {}, "ru") == "no-kit"
    assert render("no-such-code", {}) == "no-such-code"
    assert render("no-kit", {"kit": "a\n  b"}) == "no kit a b"  # one line


def test_errors_keep_their_code_and_fields_and_read_english():
    err = SharingError("booking-too-soon", minutes="60")
    assert (err.status, err.code, err.fields) == (400, "booking-too-soon", {"minutes": "60"})
    assert "at least 60 minutes ahead" in str(err)
    assert err.text("ru").startswith("бронь должна начинаться")
    assert refusal(Conflict("already-holding"), "POST /api/queue") == (409, "already-holding", {})
    api = ApiError(415, "body-not-json", media="text/plain")
    assert str(api) == "the body must be JSON (Content-Type: application/json), not 'text/plain'"
    free = Coded("some text no code names")  # older callers: shown as given
    assert (free.code, free.text("ru")) == ("text", "some text no code names")
    assert refusal(RuntimeError("boom"), "GET /x") == (
        500,
        "internal-error",
        {"kind": "RuntimeError"},
    )


def test_error_body_has_the_line_and_the_code():
    assert error_body("no-booking", {"booking": 3}, "ru") == (
        '{"error": "\\u043d\\u0435\\u0442 \\u0431\\u0440\\u043e\\u043d\\u0438 3", '
        '"code": "no-booking"}'
    )


def test_validation_problems_are_worded_in_both_languages():
    with pytest.raises(ValidationError) as missing:
        BookingCreate.model_validate_json('{"kit": "k", "course": "c", "ends_at": 5}')
    problem = validation_problem(missing.value)
    assert render(*problem) == "starts_at: Field required"
    assert render(*problem, "ru") == "starts_at: обязательное поле"
    with pytest.raises(ValidationError) as neither:
        QueueRequest.model_validate_json("{}")
    assert render(*validation_problem(neither.value)) == "ask for either a kit or a kit model"
    assert render(*validation_problem(neither.value), "ru") == "укажите либо стенд, либо модель"
    with pytest.raises(ValidationError) as bad_time:
        BookingCreate.model_validate_json(
            '{"kit": "k", "course": "c", "starts_at": "soon", "ends_at": 5}'
        )
    assert render(*validation_problem(bad_time.value), "ru") == (
        "starts_at: ожидается время ISO 8601 или секунды эпохи"
    )
    assert render(*validation_problem(bad_time.value)) == (
        "starts_at: expected an ISO 8601 time or epoch seconds"
    )
