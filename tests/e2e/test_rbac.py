"""Who may call what: every cell of role x endpoint, through the hub's URLs as browsers do.

Allowed cells must answer 200; forbidden ones 403 (or 404 where JupyterHub hides that the
thing exists). Rows: a student (anna, smart-lighting and traffic-signals), another student's
resources (boris), an instructor (irina: smart-lighting, traffic-signals), another course's
instructor (oleg: iot-basics, smart-parking), a grader (gleb: smart-lighting only), a lab
admin (lara), a hub admin (hugo).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.broker

PEOPLE = ["anna", "irina", "oleg", "gleb", "lara", "hugo"]

# endpoint -> the people allowed; everyone else in PEOPLE must be refused.
TABLE: dict[str, set[str]] = {
    "GET /hub/api/users": {"hugo", "irina", "oleg"},  # instructors: their students only
    "GET /hub/api/users/boris": {"hugo", "irina"},  # irina teaches boris
    "GET /hub/api/groups": {"hugo"},
    "GET /hub/api/groups/nbgrader-smart-lighting": {"hugo", "irina"},
    "GET /hub/api/users/boris/tokens": {"hugo"},
    "GET /hub/admin": {"hugo"},
    # Someone else's server: nobody, hub admins included (role hub-admin: no access:servers).
    "GET /user/boris/api/status": set(),
    "GET /user/anna/voila/tree": {"anna"},  # Voilà in every server, for its owner only
    # Grades: the course's instructors and graders only (hub admins run the hub, not courses).
    "GET /services/smart-lighting/formgrader": {"irina", "gleb"},
    "GET /services/smart-lighting/formgrader/api/submissions/01-energy-model": {"irina", "gleb"},
    "GET /services/iot-basics/formgrader": {"oleg"},
    "GET /services/traffic-signals/formgrader/api/submissions/01-fixed-time-plan": {"irina"},
}

CELLS = [(endpoint, who) for endpoint in TABLE for who in PEOPLE]


@pytest.fixture(scope="module")
def boris_running(browsers):
    for student in ("anna", "boris"):
        browsers[student].start_server()


@pytest.mark.parametrize(("endpoint", "who"), CELLS, ids=[f"{w}:{e}" for e, w in CELLS])
def test_role_endpoint_cell(platform, browsers, boris_running, endpoint, who):
    method, path = endpoint.split(" ", 1)
    browser = browsers[who]
    answer = browser.request(method, path, allow_redirects=True)
    if who in TABLE[endpoint]:
        assert answer.status_code in (200, 201, 202), (who, endpoint, answer.status_code)
        if path == "/hub/api/users" and who != "hugo":
            taught = {
                "irina": {"anna", "artem", "boris", "bella"},
                "oleg": {"artem", "pavel", "bella"},
            }
            assert {u["name"] for u in answer.json()} <= taught[who]
    else:
        assert answer.status_code in (403, 404), (who, endpoint, answer.status_code)


@pytest.mark.parametrize("group", ["formgrade-smart-lighting", "nbgrader-iot-basics", "lab-admins"])
def test_a_hub_admin_cannot_join_a_group_that_grants_a_role(platform, browsers, group):
    """Group membership gives course and lab roles; only the site file and LTI set it."""
    hugo = browsers["hugo"]
    joined = hugo.request("POST", f"/hub/api/groups/{group}/users", json={"users": ["hugo"]})
    assert joined.status_code == 403, (group, joined.status_code, joined.text[:200])
    left = hugo.request("DELETE", f"/hub/api/groups/{group}/users", json={"users": ["anna"]})
    assert left.status_code == 403, (group, left.status_code)
    members = hugo.get(f"/hub/api/groups/{group}").json()["users"]
    assert "hugo" not in members
