"""The LTI store on each engine (SQLite file, real PostgreSQL): one use per launch state and
per platform nonce, enrolments per LMS context, endpoints kept, scores replaced not doubled."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_config.lti.store import Context, LoginState, LtiStore, StateError


@pytest.fixture
def store(tmp_path: Path, database_url: str):
    lti = LtiStore(tmp_path / "lti", database_url)
    yield lti
    lti.close()


def test_a_login_state_is_used_once_and_an_unknown_one_never(store: LtiStore):
    login = LoginState("n1", "https://lms", "client", "https://hub/lti/launch")
    store.add_state("s1", login)
    assert store.use_state("s1") == login
    with pytest.raises(StateError, match="replayed"):
        store.use_state("s1")
    with pytest.raises(StateError, match="unknown"):
        store.use_state("forged")


def test_a_replayed_platform_nonce_is_refused(store: LtiStore):
    assert store.use_nonce("https://lms", "n1", 0)
    assert not store.use_nonce("https://lms", "n1", 0)
    assert store.use_nonce("https://other-lms", "n1", 0)  # nonces are per platform


def test_launches_keep_other_contexts_and_the_learned_grade_endpoints(store: LtiStore):
    ags = Context("moodle", "c1", "iot", "client", "IoT", "https://lms/items", ["score"])
    store.record_launch("lti-1", "moodle", "sub-1", "Anna", None, ags, {"student"})
    other = Context("moodle", "c2", "energy", "client", "Energy", None, [])
    store.record_launch("lti-1", "moodle", "sub-1", "Anna", None, other, {"student"})
    without_ags = Context("moodle", "c1", "iot", "client", "IoT 2", None, [])
    store.record_launch("lti-1", "moodle", "sub-1", "Anna K", None, without_ags, {"instructor"})

    assert {(e.course, e.role) for e in store.enrolments(username="lti-1")} == {
        ("iot", "instructor"),
        ("energy", "student"),
    }
    (context,) = store.contexts("iot")
    assert (context.title, context.lineitems, context.scopes) == (
        "IoT 2",
        "https://lms/items",
        ["score"],
    )
    assert store.user("lti-1")["name"] == "Anna K"


def test_a_score_sent_again_replaces_the_record(store: LtiStore):
    store.set_lineitem("moodle", "c1", "hw1", "https://lms/items/1")
    store.set_lineitem("moodle", "c1", "hw1", "https://lms/items/2")
    assert store.lineitem("moodle", "c1", "hw1") == "https://lms/items/2"
    store.record_score("moodle", "c1", "hw1", "lti-1", 2, 5, "failed", 1, "HTTP 503")
    store.record_score("moodle", "c1", "hw1", "lti-1", 3, 5, "sent", 2, None)
    assert [(s["score"], s["status"], s["attempts"]) for s in store.scores("hw1")] == [
        (3, "sent", 2)
    ]
    store.forget_lineitem("moodle", "c1", "hw1")
    assert store.lineitem("moodle", "c1", "hw1") is None
