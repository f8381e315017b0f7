"""LTI 1.3 launches from two LMSs at once through a real JupyterHub: users, roles, courses,
and every hostile launch refused with a clear page, a log line and no account."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from nbgrader.api import Gradebook

from tests.lti.conftest import Browser, Hub, refusal
from tests.lti.platform import INSTRUCTOR, LEARNER, LTI, TA, LaunchSpec


def groups_of(hub: Hub, name: str) -> set[str]:
    user = hub.user(name)
    assert user is not None, f"no hub user {name}"
    return set(user["groups"])


def test_students_of_both_lms_with_the_same_id_land_in_their_courses(hub, platforms):
    a, b = platforms
    browser_a, browser_b = Browser(hub), Browser(hub)
    landed_a = browser_a.launch(a, LaunchSpec("7", [LEARNER], "101"))
    landed_b = browser_b.launch(
        b, LaunchSpec("7", [LEARNER], "7", given_name="Pavel", family_name="Orlov")
    )
    assert landed_a.status_code == landed_b.status_code == 302
    # Same numeric LMS id, two institutions: two people, each seen by the hub through its cookie.
    assert browser_a.me()["name"] == "univ-a-7"
    assert browser_b.me()["name"] == "academy-7"
    assert groups_of(hub, "univ-a-7") == {
        "inst-univ-a",
        "people",
        "lab-users",
        "nbgrader-smart-city",
    }
    assert groups_of(hub, "academy-7") == {
        "inst-academy",
        "people",
        "lab-users",
        "nbgrader-iot-basics",
    }
    # The academy student is in iot-basics' gradebook with the LMS id for passback.
    folder = hub.courses / "grader-iot-basics" / "iot-basics"
    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}", course_id="iot-basics") as book:
        student = book.find_student("academy-7")
        assert (student.first_name, student.last_name, student.lms_user_id) == (
            "Pavel",
            "Orlov",
            "7",
        )
    # smart-city has no course folder on this machine: skipped, said in the log.
    assert "no course folder" in hub.log() and "univ-a-7 gets a gradebook record" in hub.log()


def test_the_same_user_launches_again_as_the_same_hub_user(hub, platforms):
    a, _ = platforms
    for _ in range(2):
        Browser(hub).launch(a, LaunchSpec("31", [LEARNER], "101"))
    assert "univ-a-31" in hub.usernames()
    assert not {n for n in hub.usernames() if n.startswith("univ-a") and n.endswith("31")} - {
        "univ-a-31"
    }


def test_instructor_and_teaching_assistant_roles(hub, platforms):
    a, b = platforms
    Browser(hub).launch(a, LaunchSpec("900", [INSTRUCTOR], "102"))
    assert groups_of(hub, "univ-a-900") == {
        "inst-univ-a",
        "people",
        "lab-users",
        "formgrade-iot-basics",
        "instructors-iot-basics",
    }
    # LMSs send a TA as Instructor plus the TeachingAssistant sub-role: a grader, no more.
    Browser(hub).launch(b, LaunchSpec("ta1", [INSTRUCTOR, TA], "7"))
    assert groups_of(hub, "academy-ta1") == {"inst-academy", "people", "formgrade-iot-basics"}


def test_a_user_in_two_courses_keeps_both(hub, platforms):
    a, _ = platforms
    browser = Browser(hub)
    browser.launch(a, LaunchSpec("55", [LEARNER], "101"))
    browser.launch(a, LaunchSpec("55", [LEARNER], "102"))
    assert groups_of(hub, "univ-a-55") == {
        "inst-univ-a",
        "people",
        "lab-users",
        "nbgrader-smart-city",
        "nbgrader-iot-basics",
    }
    assert set(browser.me()["groups"]) >= {"nbgrader-smart-city", "nbgrader-iot-basics"}
    # A role change in one LMS course replaces that course's role only.
    browser.launch(a, LaunchSpec("55", [INSTRUCTOR], "101"))
    assert groups_of(hub, "univ-a-55") == {
        "inst-univ-a",
        "people",
        "lab-users",
        "formgrade-smart-city",
        "instructors-smart-city",
        "nbgrader-iot-basics",
    }


def test_opaque_lms_ids_get_a_stable_hashed_name(hub, platforms):
    _, b = platforms
    sub = "A7f3-Canvas-User-ID-With-Capitals"
    Browser(hub).launch(b, LaunchSpec(sub, [LEARNER], "7"))
    names = {n for n in hub.usernames() if n.startswith("academy_")}
    Browser(hub).launch(b, LaunchSpec(sub, [LEARNER], "7"))
    assert len(names) == 1 and names == {n for n in hub.usernames() if n.startswith("academy_")}
    assert len(names.pop()) <= 32


def test_target_link_on_the_hub_is_where_the_user_lands(hub, platforms):
    a, _ = platforms
    landed = Browser(hub).launch(
        a, LaunchSpec("77", [LEARNER], "101", target=f"{hub.url}/hub/home")
    )
    assert landed.status_code == 302 and landed.headers["Location"] == "/hub/home"
    elsewhere = Browser(hub).launch(
        a, LaunchSpec("77", [LEARNER], "101", target="https://evil.example/hub/home")
    )
    assert elsewhere.headers["Location"] == "/hub/spawn"  # the hub's default, not the other site


# ------------------------------------------------------------------ hostile launches


def spoil(**changes: Any):
    def edit(claims: dict[str, Any]) -> None:
        for name, value in changes.items():
            name = name.replace("LTI_", LTI)
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value(claims) if callable(value) else value

    return edit


def ago(seconds: int):
    return lambda claims: int(time.time()) - seconds


HOSTILE = {
    # Beyond the 60 s of clock difference the hub tolerates.
    "expired": (spoil(iat=ago(900), exp=ago(600)), "expired id_token"),
    "future-dated": (spoil(iat=ago(-900), exp=ago(-1200)), "id_token from the future"),
    "wrong audience": (spoil(aud="someone-else", azp="someone-else"), "wrong audience"),
    "second audience without azp": (
        spoil(aud=lambda c: ["other", c["aud"]], azp=None),
        "wrong audience",
    ),
    "unknown issuer in the token": (spoil(iss="https://lms.unknown.example"), "unknown issuer"),
    "unknown deployment": (spoil(LTI_deployment_id="99"), "unknown deployment '99'"),
    "no sub": (spoil(sub=None), "missing claim"),
    "no nonce": (spoil(nonce=None), "missing claim"),
    "no roles": (spoil(LTI_roles=None), "missing claim"),
    "no context": (spoil(LTI_context=None), "missing claim"),
    "no message type": (spoil(LTI_message_type=None), "missing claim"),
    "deep linking message": (
        spoil(LTI_message_type="LtiDeepLinkingRequest"),
        "unsupported message type",
    ),
    "LTI 1.1 version": (spoil(LTI_version="1.1"), "unsupported LTI version"),
    "no course role": (
        spoil(
            LTI_roles=["http://purl.imsglobal.org/vocab/lis/v2/institution/person#Administrator"]
        ),
        "no course role",
    ),
    "unlinked LMS course": (
        spoil(LTI_context={"id": "999", "title": "Cooking"}),
        "LMS course '999' (Cooking) is not linked",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_launch_is_refused_without_an_account(hub, platforms, case):
    a, _ = platforms
    edit, reason = HOSTILE[case]
    before = hub.usernames()
    response = Browser(hub).launch(a, LaunchSpec("666", [LEARNER], "101", spoil=edit))
    assert response.status_code in (400, 403)
    assert reason in refusal(response), response.text
    assert hub.usernames() == before
    assert f"LTI launch refused: {reason}" in hub.log().replace("&#39;", "'")


def test_forged_signature_is_refused(hub, platforms):
    a, _ = platforms
    before = hub.usernames()
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response = Browser(hub).launch(a, LaunchSpec("666", [LEARNER], "101", signing_key=forger))
    assert response.status_code == 403 and "bad signature" in refusal(response)
    assert hub.usernames() == before


def test_replayed_launch_and_replayed_nonce_are_refused(hub, platforms):
    a, _ = platforms
    browser = Browser(hub)
    action, fields = browser.authorise(a, LaunchSpec("667", [LEARNER], "101"))
    assert browser.post(action, fields).status_code == 302
    users = hub.usernames()
    again = browser.post(action, fields)
    assert again.status_code == 403 and "replayed launch" in refusal(again)
    # The captured id_token with a fresh login state: its nonce answers the old login.
    _, fresh = browser.authorise(a, LaunchSpec("668", [LEARNER], "101"))
    stolen = browser.post(action, {"id_token": fields["id_token"], "state": fresh["state"]})
    assert stolen.status_code == 403 and "nonce mismatch" in refusal(stolen)
    assert hub.usernames() == users and "univ-a-668" not in users


def test_launch_from_another_browser_is_refused(hub, platforms):
    """Login CSRF: a form captured by one browser and posted by another lacks the state cookie."""
    a, _ = platforms
    action, fields = Browser(hub).authorise(a, LaunchSpec("669", [LEARNER], "101"))
    response = Browser(hub).post(action, fields)
    assert response.status_code == 403 and "did not start the launch" in refusal(response)
    assert hub.user("univ-a-669") is None


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"iss": "https://lms.unknown.example"}, "unknown issuer"),
        ({"client_id": "nobody"}, "unknown client id"),
        ({"lti_deployment_id": "42"}, "unknown deployment '42'"),
        ({"login_hint": ""}, "has no login_hint"),
    ],
)
def test_bad_login_initiation_is_refused(hub, platforms, params, reason):
    a, _ = platforms
    browser = Browser(hub)
    hint = a.prepare(LaunchSpec("670", [LEARNER], "101"))
    query = {
        "iss": a.issuer,
        "login_hint": hint,
        "target_link_uri": f"{hub.url}/hub/home",
        "client_id": a.client_id,
        "lti_deployment_id": a.deployment_id,
        **params,
    }
    response = browser.session.get(
        f"{hub.url}/hub/lti/login", params=query, allow_redirects=False, timeout=10
    )
    assert response.status_code in (400, 403)
    assert reason in refusal(response)


def test_tool_publishes_its_key_and_canvas_configuration(hub, platforms):
    keys = Browser(hub).session.get(f"{hub.url}/hub/lti/jwks", timeout=10).json()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and "d" not in keys[0]
    config = Browser(hub).session.get(f"{hub.url}/hub/lti/canvas.json", timeout=10).json()
    assert config["oidc_initiation_url"] == f"{hub.url}/hub/lti/login"
    assert config["public_jwk_url"] == f"{hub.url}/hub/lti/jwks"
