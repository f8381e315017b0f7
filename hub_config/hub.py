"""JupyterHub configuration derived from the site file: groups, roles, services and users.

Pure functions of a Site returning plain data (no hub running), so that tests and
jupyterhub_config.py share one derivation. Least privilege: nobody but hub admins holds an
`admin:*` scope; course access follows nbgrader's demos/demo_multiple_classes (RBAC era):

- students (group nbgrader-<course>): `list:services`, `read:services!service=<course>`;
- instructors and graders (group formgrade-<course>): `access:services!service=<course>`,
  the course's formgrader, which runs as the account grader-<course>;
- instructors also read the names, groups and activity of their course's students;
- lab users (students, instructors, lab admins): `access:services!service=lab`; lab admins get
  nothing more from the hub: kit administration is checked by the lab service itself
  (group lab-admins in the caller's token), and they get no formgrader, hence no grades;
- hub admins: JupyterHub's admin role, through `Authenticator.admin_users`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jupyterhub.auth import Authenticator
from jupyterhub.roles import get_default_roles
from traitlets import Unicode, default

from hub_config.site import GRADER_PREFIX, Site, load_site, verify_password

LAB_SERVICE = "lab"
LAB_URL = "http://127.0.0.1:8181"
STATUS_SERVICE = "status"
STATUS_URL = "http://127.0.0.1:8282"
FORMGRADER_FIRST_PORT = 9900  # course i's formgrader listens on 127.0.0.1:9900+i
GRADER_HOME = "/home"  # the grader accounts' home folders hold the course folders

LAB_USERS = "lab-users"
LAB_ADMINS = "lab-admins"
LAB_USER_ROLES = ("student", "instructor", "lab-admin")

# The single-user server's own token ($JUPYTERHUB_API_TOKEN, intersected with what the user
# holds): nbgrader's assignment list reads the user's groups and discovers course services.
SERVER_TOKEN_SCOPES = [
    "users:activity!user",
    "read:users:name!user",
    "read:users:groups!user",
    "list:services",
    "read:services",
]


def grader_account(course_id: str) -> str:
    return GRADER_PREFIX + course_id


def institution_group(institution_id: str) -> str:
    return f"inst-{institution_id}"


# ------------------------------------------------------------------ groups and users


def user_groups(site: Site) -> dict[str, list[str]]:
    """Each person's hub groups; the authenticator hands them over at every login."""
    found: dict[str, set[str]] = {p.username: {institution_group(p.institution)}
                                  for p in site.people}
    for course in site.courses:
        for username in course.students:
            found[username].add(f"nbgrader-{course.id}")
        for username in (*course.instructors, *course.graders):
            found[username].add(f"formgrade-{course.id}")
    for person in site.people:
        if any(role in person.roles for role in LAB_USER_ROLES):
            found[person.username].add(LAB_USERS)
        if "lab-admin" in person.roles:
            found[person.username].add(LAB_ADMINS)
    return {name: sorted(groups) for name, groups in found.items()}


def groups(site: Site) -> dict[str, list[str]]:
    """Every hub group with its members, including the empty groups of courses and institutions."""
    members: dict[str, set[str]] = {institution_group(i.id): set() for i in site.institutions}
    for course in site.courses:
        members[f"nbgrader-{course.id}"] = set()
        members[f"formgrade-{course.id}"] = set()
    members[LAB_USERS], members[LAB_ADMINS] = set(), set()
    for username, names in user_groups(site).items():
        for name in names:
            members[name].add(username)
    return {name: sorted(users) for name, users in sorted(members.items())}


def grader_accounts(site: Site) -> list[str]:
    return [grader_account(c.id) for c in site.courses]


def hub_users(site: Site) -> list[str]:
    """Everyone the hub lets in: the people, and each course's grader account (nbgrader #1872)."""
    return sorted([p.username for p in site.people] + grader_accounts(site))


def admin_users(site: Site) -> list[str]:
    return sorted(p.username for p in site.with_role("hub-admin"))


# ------------------------------------------------------------------ roles


def _course_roles(course_id: str, instructors: list[str]) -> list[dict[str, Any]]:
    students = f"nbgrader-{course_id}"
    return [
        {"name": students, "description": f"Students of {course_id}: find its service",
         "groups": [students],
         "scopes": ["list:services", f"read:services!service={course_id}"]},
        {"name": f"formgrade-{course_id}", "description": f"The formgrader of {course_id}",
         "groups": [f"formgrade-{course_id}"], "users": [grader_account(course_id)],
         "scopes": ["list:services", f"read:services!service={course_id}",
                    f"access:services!service={course_id}"]},
        # Instructors see who their students are and when they were active, nothing else.
        {"name": f"instructor-{course_id}", "description": f"Instructors of {course_id}",
         "users": sorted(instructors),
         "scopes": [f"list:users!group={students}", f"read:users:name!group={students}",
                    f"read:users:groups!group={students}",
                    f"read:users:activity!group={students}", f"read:groups!group={students}"]},
        # The formgrader's own token: nbgrader's JupyterHubAuthPlugin reads students' groups.
        {"name": f"service-{course_id}", "description": f"The {course_id} formgrader service",
         "services": [course_id],
         "scopes": [f"list:users!group={students}", f"read:users:name!group={students}",
                    f"read:users:groups!group={students}"]},
    ]


def load_roles(site: Site) -> list[dict[str, Any]]:
    """`c.JupyterHub.load_roles`; every user also keeps the default `user` role (own server)."""
    roles: list[dict[str, Any]] = []
    for course in site.courses:
        roles += _course_roles(course.id, course.instructors)
    roles += [
        {"name": LAB_USERS, "description": "Use the shared lab kits", "groups": [LAB_USERS],
         "scopes": ["list:services", f"read:services!service={LAB_SERVICE}",
                    f"access:services!service={LAB_SERVICE}"]},
        {"name": LAB_ADMINS, "description": "Administer the kits (in the lab service)",
         "groups": [LAB_ADMINS],
         "scopes": ["list:services", f"read:services!service={LAB_SERVICE}",
                    f"access:services!service={LAB_SERVICE}"]},
        # The lab service maps callers and bookings to courses and institutions (groups).
        {"name": "lab-service", "description": "The lab service's own token",
         "services": [LAB_SERVICE],
         "scopes": ["list:users", "read:users:name", "read:users:groups"]},
    ]
    return roles


def roles_of(site: Site, username: str) -> list[dict[str, Any]]:
    """The roles a hub user ends up with: default `user`, group roles, direct ones, admin."""
    defaults = {r["name"]: r for r in get_default_roles()}
    held = [defaults["user"]]
    mine = set(user_groups(site).get(username, []))
    for role in load_roles(site):
        if username in role.get("users", []) or mine & set(role.get("groups", [])):
            held.append(role)
    if username in admin_users(site):
        held.append(defaults["admin"])
    return held


def scopes_of(site: Site, username: str) -> set[str]:
    """Unexpanded scopes of a hub user, for checks and tests."""
    return {scope for role in roles_of(site, username) for scope in role["scopes"]}


# ------------------------------------------------------------------ services


def formgrader_service(course_id: str, index: int) -> dict[str, Any]:
    """One course's formgrader as in nbgrader's demo_multiple_classes."""
    account = grader_account(course_id)
    return {
        "name": course_id,  # nbgrader: service name == CourseDirectory.course_id
        "url": f"http://127.0.0.1:{FORMGRADER_FIRST_PORT + index}",
        "command": ["jupyterhub-singleuser"],
        "user": account,
        "cwd": f"{GRADER_HOME}/{account}",
        "environment": {"JUPYTERHUB_DEFAULT_URL": "/lab"},
        "oauth_no_confirm": True,
    }


def services(site: Site) -> list[dict[str, Any]]:
    """`c.JupyterHub.services`: the course formgraders, the lab service, the status board."""
    found = [formgrader_service(c.id, i) for i, c in enumerate(site.courses)]
    found.append({
        # Started by `smartlab up`, not by the hub; HubOAuth tells it who calls.
        "name": LAB_SERVICE, "url": LAB_URL, "display": True, "oauth_no_confirm": True,
    })
    # Public, read-only board (placeholder until it lands): no hub scopes at all.
    found.append({"name": STATUS_SERVICE, "url": STATUS_URL, "display": True})
    return found


# ------------------------------------------------------------------ login


class SiteAuthenticator(Authenticator):
    """Log in with the site file's password hashes; the site file also sets the groups."""

    site_path = Unicode(
        help="The site file; default $SMARTLAB_SITE or hub_config/demo-site.yaml."
    ).tag(config=True)

    @default("site_path")
    def _site_path_default(self) -> str:
        return os.environ.get("SMARTLAB_SITE", str(Path(__file__).parent / "demo-site.yaml"))

    @default("manage_groups")
    def _manage_groups_default(self) -> bool:
        return True  # the site file, not the hub's API, decides group membership

    _site: Site | None = None
    _site_mtime: float = -1.0

    def site(self) -> Site:
        """The site file, reread when it changes (memberships apply at the next login)."""
        mtime = Path(self.site_path).stat().st_mtime
        if self._site is None or mtime != self._site_mtime:
            self._site, self._site_mtime = load_site(self.site_path), mtime
        return self._site

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any] | None:
        site = self.site()
        person = site.person(data.get("username", ""))
        # Grader accounts are not people: they have no password and cannot log in here.
        if person is None or not verify_password(data.get("password", ""),
                                                 person.password_hash):
            return None
        return {"name": person.username, "groups": user_groups(site)[person.username],
                "admin": "hub-admin" in person.roles}
