"""The site file model: the demo site validates; every error is one line naming file and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from hardware_kits.descriptor import DescriptorError
from site_config.kits import load_kits
from site_config.paths import DEMO_SITE
from site_config.site import load_site, pbkdf2_hash, verify_password

DEMO = DEMO_SITE


@pytest.fixture(scope="module")
def demo_data() -> dict[str, Any]:
    return yaml.safe_load(DEMO.read_text(encoding="utf-8"))


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_demo_site_is_valid(models):
    site = load_site(DEMO, models)
    assert {i.kind for i in site.institutions} == {"centre", "university", "academy"}
    assert [c.id for c in site.courses] == [
        "smart-lighting",
        "iot-basics",
        "traffic-signals",
        "smart-parking",
    ]
    assert set(site.course("smart-lighting").institutions) == {"univ-a", "univ-b"}
    roles = {r for p in site.people for r in p.roles}
    assert roles == {"student", "instructor", "grader", "lab-admin", "hub-admin"}
    students = {site.person(u).institution for u in site.course("smart-lighting").students}
    assert students == {"univ-a", "univ-b"}


def test_demo_site_names_every_kit_and_institution_in_russian(models):
    site = load_site(DEMO, models)
    assert all(i.ru and i.ru.name for i in site.institutions)
    assert all(k.ru and k.ru.name for k in load_kits(DEMO, models))


def test_demo_site_keeps_its_kits(models, demo_data):
    site = load_site(DEMO, models)
    assert [k.model_dump(exclude_defaults=True) for k in site.kits] == demo_data["kits"]


def test_demo_passwords_are_the_documented_ones(models):
    site = load_site(DEMO, models)
    for person in site.people:
        assert verify_password(f"demo-{person.username}", person.password_hash)
        assert not verify_password(person.username, person.password_hash)


def test_password_hash_round_trip():
    hashed = pbkdf2_hash("s3cret", rounds=1000)
    assert hashed.startswith("$pbkdf2-sha256$1000$")
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret!", hashed)
    assert pbkdf2_hash("s3cret", rounds=1000) != hashed  # salted


def person(data: dict[str, Any], username: str) -> dict[str, Any]:
    return next(p for p in data["people"] if p["username"] == username)


def course(data: dict[str, Any], course_id: str) -> dict[str, Any]:
    return next(c for c in data["courses"] if c["id"] == course_id)


# Each case breaks the demo site in one way; the error names the field that is wrong.
def _unknown_institution(d):
    person(d, "anna")["institution"] = "univ-z"


def _unknown_course_institution(d):
    course(d, "smart-lighting")["institutions"].append("univ-z")


def _unknown_student(d):
    course(d, "smart-lighting")["students"].append("zoe")


def _unknown_kit(d):
    course(d, "iot-basics")["kits"] = ["envstation-9"]


def _instructor_without_role(d):
    course(d, "smart-lighting")["instructors"] = ["anna"]


def _grader_without_role(d):
    course(d, "smart-lighting")["graders"] = ["boris"]


def _reserved_course_id(d):
    course(d, "iot-basics")["id"] = "lab"


def _status_course_id(d):
    course(d, "iot-basics")["id"] = "status"


def _duplicate_course(d):
    course(d, "iot-basics")["id"] = "smart-lighting"


def _duplicate_person(d):
    person(d, "artem")["username"] = "anna"


def _duplicate_institution(d):
    d["institutions"][3]["id"] = "univ-a"


def _student_of_absent_institution(d):
    course(d, "iot-basics")["students"].append("boris")  # univ-b does not take part


def _person_named_like_grader_account(d):
    person(d, "gleb")["username"] = "grader-smart-lighting"


def _person_named_like_the_lab_service(d):
    person(d, "hugo")["username"] = "lab-service"  # the service's MQTT account


def _person_named_like_a_sandbox_account(d):
    person(d, "hugo")["username"] = "smartlab-sb3"  # a grading sandbox's Unix account


def _person_named_anonymous(d):
    person(d, "hugo")["username"] = "anonymous"  # the kits' ack topic for unusable requesters


def _person_named_like_a_kit(d):
    person(d, "hugo")["username"] = "kit-streetlight-1"  # a kit's MQTT account


def _bad_course_id(d):
    course(d, "iot-basics")["id"] = "IoT_Basics"


def _bad_username(d):
    person(d, "hugo")["username"] = "9hugo"


def _long_username(d):
    person(d, "hugo")["username"] = "h" * 33


def _plain_password(d):
    person(d, "anna")["password_hash"] = "demo-anna"


def _broken_pbkdf2(d):
    person(d, "anna")["password_hash"] = "$pbkdf2-sha256$29000$abc"


def _unknown_role(d):
    person(d, "anna")["roles"] = ["admin"]


def _unknown_kind(d):
    d["institutions"][0]["kind"] = "school"


def _extra_field(d):
    course(d, "smart-lighting")["teacher"] = "irina"


def _extra_top_level(d):
    d["staff"] = []


def _not_strict(d):
    person(d, "anna")["roles"] = "student"  # a string is not a list of roles


def _number_title(d):
    course(d, "smart-lighting")["title"] = 42  # strict: no silent conversion


def _bad_kit_entry(d):
    d["kits"][0]["model"] = "no-such-model"


CASES = [
    (_unknown_institution, "people.0.institution", "univ-z"),
    (_unknown_course_institution, "courses.0.institutions.2", "univ-z"),
    (_unknown_student, "courses.0.students.4", "zoe"),
    (_unknown_kit, "courses.1.kits.0", "envstation-9"),
    (_instructor_without_role, "courses.0.instructors.0", "instructor role"),
    (_grader_without_role, "courses.0.graders.0", "grader role"),
    (_reserved_course_id, "courses.1.id", "another hub service"),
    (_status_course_id, "courses.1.id", "another hub service"),
    (_duplicate_course, "courses.1.id", "used twice"),
    (_duplicate_person, "people.1.username", "used twice"),
    (_duplicate_institution, "institutions.3.id", "used twice"),
    (_student_of_absent_institution, "courses.1.students.2", "does not take part"),
    (_person_named_like_grader_account, "people.7.username", "grader account"),
    (_person_named_like_the_lab_service, "people.9.username", "platform's own accounts"),
    (_person_named_like_a_sandbox_account, "people.9.username", "'smartlab-sb'"),
    (_person_named_anonymous, "people.9.username", "platform's own accounts"),
    (_person_named_like_a_kit, "people.9.username", "'kit-'"),
    (_bad_course_id, "courses.1.id", "lowercase"),
    (_bad_username, "people.9.username", "lowercase"),
    (_long_username, "people.9.username", "32"),
    (_plain_password, "people.0.password_hash", "plain password"),
    (_broken_pbkdf2, "people.0.password_hash", "pbkdf2"),
    (_unknown_role, "people.0.roles.0", "student"),
    (_unknown_kind, "institutions.0.kind", "centre"),
    (_extra_field, "courses.0.teacher", "Extra inputs"),
    (_extra_top_level, "staff", "Extra inputs"),
    (_not_strict, "people.0.roles", "valid list"),
    (_number_title, "courses.0.title", "valid string"),
    (_bad_kit_entry, "kits.0.model", "no kit model"),
]


@pytest.mark.parametrize(
    ("breaks", "field", "reason"), CASES, ids=[c[0].__name__.strip("_") for c in CASES]
)
def test_errors_are_one_line_naming_file_and_field(
    tmp_path, models, demo_data, breaks, field, reason
):
    data = copy.deepcopy(demo_data)
    breaks(data)
    path = write(tmp_path, data)
    with pytest.raises(DescriptorError) as caught:
        load_site(path, models)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {field}: "), message
    assert reason in message


def test_unreadable_site_is_one_line(tmp_path, models):
    with pytest.raises(DescriptorError, match=r"missing\.yaml: cannot read"):
        load_site(tmp_path / "missing.yaml", models)
