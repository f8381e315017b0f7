"""The site file's LMS platforms, LTI usernames and role mapping (no hub, no network)."""

from __future__ import annotations

import random
import re
import string
from typing import Any

import pytest
import yaml

from hardware_kits.descriptor import DescriptorError
from hub_config.lti.passback import with_query
from hub_config.lti.platforms import (
    INSTRUCTOR,
    LEARNER,
    TEACHING_ASSISTANT,
    Platform,
    course_roles,
    find_platform,
    hub_groups,
    platforms,
)
from site_config.paths import DEMO_SITE
from site_config.site import USERNAME, lms_username_pattern, parse_site, pbkdf2_hash


def lms(**changes: Any) -> dict[str, Any]:
    entry = {
        "issuer": "https://moodle.example",
        "client_ids": ["abc"],
        "deployment_ids": [1],
        "authorization_endpoint": "https://moodle.example/mod/lti/auth.php",
        "token_endpoint": "https://moodle.example/mod/lti/token.php",
        "jwks_uri": "https://moodle.example/mod/lti/certs.php",
        "contexts": {12: "iot"},
    }
    return {**entry, **changes}


def site(*institutions: dict[str, Any], people: list[dict] | None = None) -> dict[str, Any]:
    return {
        "kits": [],
        "institutions": [{"id": "centre", "name": "C", "kind": "centre"}, *institutions],
        "courses": [
            {
                "id": "iot",
                "title": "IoT",
                "institutions": ["academy", "univ-a"],
                "instructors": ["oleg"],
            },
            {"id": "solo", "title": "Solo", "institutions": ["centre"], "instructors": ["oleg"]},
        ],
        "people": [
            {
                "username": "oleg",
                "name": "Oleg",
                "institution": "centre",
                "roles": ["instructor"],
                "password_hash": pbkdf2_hash("x", 1000),
            },
            *(people or []),
        ],
    }


def academy(*entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "academy", "name": "A", "kind": "academy", "lms": list(entries), **extra}


def univ_a(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"id": "univ-a", "name": "U", "kind": "university", "lms": list(entries)}


def error(data: dict[str, Any]) -> str:
    with pytest.raises(DescriptorError) as caught:
        parse_site(data, "site.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_numbers_from_yaml_become_lti_strings():
    parsed = parse_site(site(academy(lms(client_ids=[10000000000001])), univ_a()), "site.yaml")
    [platform] = platforms(parsed)
    assert platform.client_ids == ("10000000000001",) and platform.deployment_ids == ("1",)
    assert platform.contexts == {"12": "iot"} and platform.key == "academy"
    assert platform.token_audience == "https://moodle.example/mod/lti/token.php"


@pytest.mark.parametrize(
    "data, expected",
    [
        (
            site(academy(lms(contexts={"12": "cooking"})), univ_a()),
            "site.yaml: institutions.1.lms.0.contexts.12: no course 'cooking'",
        ),
        (
            site(academy(lms(contexts={"12": "solo"})), univ_a()),
            "site.yaml: institutions.1.lms.0.contexts.12: 'academy' does not take part in 'solo'",
        ),
        (
            site(academy(lms(jwks_uri="http://moodle.example/certs.php")), univ_a()),
            "site.yaml: institutions.1.lms.0.jwks_uri: Value error, must be an https:// URL "
            "(http:// only for localhost)",
        ),
        (
            site(academy(lms(), lms(client_ids=["other"])), univ_a()),
            "site.yaml: institutions.1.lms.1.username_prefix: 'academy' already names the users of "
            "institutions.1.lms.0; set a different username_prefix",
        ),
        (
            site(academy(lms()), univ_a(lms(contexts={}))),
            "site.yaml: institutions.2.lms.0.client_ids.0: issuer 'https://moodle.example' with "
            "client id 'abc' is also declared at institutions.1.lms.0",
        ),
        (
            site(academy(lms(username_prefix="an-academy-with-a-long-name")), univ_a()),
            "site.yaml: institutions.1.lms.0.username_prefix: 'an-academy-with-a-long-name' "
            "cannot begin usernames: it needs a letter first and at most 19 characters "
            "(set username_prefix)",
        ),
        (
            site(academy(lms(username_prefix="grader")), univ_a()),
            "site.yaml: institutions.1.lms.0.username_prefix: 'grader' would clash with the "
            "courses' grader accounts",
        ),
        (
            site(academy(lms(username_prefix="lab")), univ_a()),
            "site.yaml: institutions.1.lms.0.username_prefix: 'lab' could name an LMS user "
            "'lab-service', one of the platform's accounts",
        ),
        (
            site(academy(lms(username_prefix="smartlab")), univ_a()),
            "site.yaml: institutions.1.lms.0.username_prefix: 'smartlab' could name an LMS user "
            "'smartlab-admin', one of the platform's accounts",
        ),
        (
            site(academy(lms(username_prefix="kit")), univ_a()),
            "site.yaml: institutions.1.lms.0.username_prefix: 'kit' could name LMS users "
            "kit-…, the platform's own accounts",
        ),
        (
            site(academy(lms(deployment_ids=[1, "1"])), univ_a()),
            "site.yaml: institutions.1.lms.0.deployment_ids.1: '1' is used twice",
        ),
        (
            site(academy(lms(client_ids=[])), univ_a()),
            "site.yaml: institutions.1.lms.0.client_ids: List should have at least 1 item after "
            "validation, not 0",
        ),
        (
            site(
                academy(lms()),
                univ_a(),
                people=[
                    {
                        "username": "academy-12",
                        "name": "X",
                        "institution": "academy",
                        "roles": ["student"],
                        "password_hash": pbkdf2_hash("x", 1000),
                    }
                ],
            ),
            "site.yaml: people.1.username: 'academy-12' is a username of the LMS at "
            "institutions.1.lms.0; rename the person or set that LMS's username_prefix",
        ),
    ],
)
def test_bad_lms_entries_are_one_line_errors(data, expected):
    assert error(data) == expected


def test_two_platforms_of_one_issuer_are_told_apart_by_client_id():
    canvas = {
        "issuer": "https://canvas.instructure.com",
        "authorization_endpoint": "https://sso.canvaslms.com/api/lti/authorize_redirect",
        "token_endpoint": "https://sso.canvaslms.com/login/oauth2/token",
        "jwks_uri": "https://sso.canvaslms.com/api/lti/security/jwks",
    }
    parsed = parse_site(
        site(
            academy(lms(**canvas, client_ids=["1001"])),
            univ_a(lms(**canvas, client_ids=["2002"], contexts={})),
        ),
        "site.yaml",
    )
    assert find_platform(parsed, canvas["issuer"], "2002").institution == "univ-a"
    assert find_platform(parsed, canvas["issuer"], "1001").institution == "academy"
    assert find_platform(parsed, canvas["issuer"], None) is None  # ambiguous without client id
    assert find_platform(parsed, canvas["issuer"], "3003") is None


def test_demo_site_example_lms_is_valid():
    """The commented academy LMS in the demo site file, uncommented, is a valid site file."""
    text = DEMO_SITE.read_text()
    uncommented = re.sub(r"(?m)^    # (lms:|  )", r"    \1", text)
    assert uncommented != text
    parsed = parse_site(yaml.safe_load(uncommented), "demo-site.yaml")
    [platform] = platforms(parsed)
    assert platform.institution == "academy" and platform.contexts == {"42": "iot-basics"}


# ------------------------------------------------------------------ usernames


def platform(key: str, issuer: str = "https://lms.example") -> Platform:
    return Platform(
        key=key,
        institution=key,
        issuer=issuer,
        client_ids=("c",),
        deployment_ids=("1",),
        authorization_endpoint="",
        token_endpoint="",
        jwks_uri="",
        token_audience="",
        contexts={},
    )


def test_usernames_are_readable_for_numeric_ids_and_hashed_otherwise():
    assert platform("academy").username("7") == "academy-7"
    hashed = platform("academy").username("f3c1-5E0A-Canvas")
    assert re.fullmatch(r"academy_[a-z2-7]{12}", hashed)
    assert platform("academy").username("f3c1-5E0A-Canvas") == hashed  # stable
    assert platform("academy").username("A") != platform("academy").username("a")
    long_id = "1" * 40
    assert len(platform("academy").username(long_id)) <= 32


def test_usernames_never_collide_between_platforms():
    keys = ["univ", "univ-a", "univ-a-1", "academy", "a"]
    rng = random.Random(8)
    subs = [str(n) for n in range(60)] + [
        "".join(rng.choices(string.ascii_letters + string.digits + "-_:", k=rng.randint(1, 40)))
        for _ in range(300)
    ]
    seen: dict[str, tuple[str, str]] = {}
    for key in keys:
        for sub in subs:
            name = platform(key).username(sub)
            assert USERNAME.match(name), name
            assert lms_username_pattern(key).match(name), name
            assert seen.setdefault(name, (key, sub)) == (key, sub), name


# ------------------------------------------------------------------ roles and groups


@pytest.mark.parametrize(
    "roles, expected",
    [
        ([LEARNER], {"student"}),
        (["Learner"], {"student"}),
        ([INSTRUCTOR], {"instructor"}),
        ([INSTRUCTOR, TEACHING_ASSISTANT], {"grader"}),
        ([TEACHING_ASSISTANT], {"grader"}),
        (["http://purl.imsglobal.org/vocab/lis/v2/institution/person#Administrator"], set()),
        ([LEARNER, INSTRUCTOR], {"student", "instructor"}),
    ],
)
def test_lti_roles_map_to_course_roles(roles, expected):
    assert course_roles(roles) == expected


def test_groups_merge_courses_and_keep_unmanaged_groups():
    groups = hub_groups(
        "academy",
        [("iot", "student"), ("city", "grader")],
        existing=["nbgrader-old", "inst-other", "survey-panel", "lab-users"],
    )
    assert groups == [
        "formgrade-city",
        "inst-academy",
        "lab-users",
        "nbgrader-iot",
        "people",
        "survey-panel",
    ]
    assert hub_groups("academy", [("city", "grader")]) == [
        "formgrade-city",
        "inst-academy",
        "people",
    ]


def test_scores_url_keeps_the_line_item_query():
    assert with_query(
        "https://m.example/mod/lti/services.php/2/lineitems/5/lineitem?type_id=1", "/scores"
    ) == ("https://m.example/mod/lti/services.php/2/lineitems/5/lineitem/scores?type_id=1")
    assert with_query("https://c.example/api/lti/courses/1/line_items", resource_id="ps 1") == (
        "https://c.example/api/lti/courses/1/line_items?resource_id=ps+1"
    )
