"""JupyterHub configuration derived from the site file: groups, roles, services and users.

Pure functions of a Site returning plain data (no hub running), so that tests and
jupyterhub_config.py share one derivation. Least privilege: nobody but hub admins holds an
`admin:*` scope, and nobody holds JupyterHub's built-in `admin` role; course access follows
nbgrader's demos/demo_multiple_classes (RBAC era):

- students (group nbgrader-<course>): `list:services`, `read:services!service=<course>`;
- instructors and graders (group formgrade-<course>): `access:services!service=<course>`,
  the course's formgrader, which runs as the account grader-<course>;
- instructors (also group instructors-<course>, which tells the lab service who may book for
  the course) read the names, groups and activity of their course's students;
- lab users (students, instructors, lab admins): `access:services!service=lab`; lab admins get
  nothing more from the hub: kit administration is checked by the lab service itself
  (group lab-admins in the caller's token), and they get no formgrader, hence no grades;
- hub admins: the role `hub-admin`, JupyterHub's admin scopes without `access:servers`,
  `tokens`, `shutdown`, `admin:groups` and `admin:users`: they see users and groups, remove
  users and manage servers, but cannot enter a student's server, mint a token in someone's
  name, or change anyone's groups, name or roles (the site file and LTI alone do).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from jupyterhub import orm
from jupyterhub.auth import Authenticator
from jupyterhub.roles import get_default_roles
from sqlalchemy.orm import object_session
from traitlets import Unicode, default

from grader.settings import SOCKET_ENV
from hub_config.class_warmup import RECORD_FILE as WARMUP_RECORD
from hub_config.spawner import JUPYTER_CONFIG_DIR
from lab_service.app import DB_FILE as LAB_DB_FILE
from lab_service.store import sqlite_url
from labs.board import DATA_DIR as VOILA_DATA_DIR
from labs.client.rest_service import SERVICE_URL_ENV
from site_config.paths import LAB_DB_URL_ENV, default_site
from site_config.platform_accounts import BOARD_ACCOUNT
from site_config.runtime import BROKER_SOCKET_ENV, Runtime
from site_config.site import GRADER_PREFIX, Site, load_site, verify_password

LAB_SERVICE = "lab"
STATUS_SERVICE = "status"
HOME_SERVICE = "home"  # the front door, where everyone lands after login (labs/home/)
CULLER_SERVICE = "idle-culler"
WARMUP_SERVICE = "class-warmup"  # hub_config/class_warmup.py
JOB_RUNNER_SERVICE = "job-runner"  # hub_config/job_runner.py; the lab service knows it by name
LAB_SERVICE_CONFIG = "lab_service_config.py"  # in the state folder, written by `smartlab up`
SCHEDULE_FILE = "schedule.json"  # published due dates (labs/home/exchange.py), optional

LAB_USERS = "lab-users"
LAB_ADMINS = "lab-admins"
# Every person (site file or LTI), never a service account such as grader-<course>: what the
# front door and the hub admin page are scoped to.
PEOPLE = "people"
LAB_USER_ROLES = ("student", "instructor", "lab-admin")

# The single-user server's own token ($JUPYTERHUB_API_TOKEN, intersected with what the user
# holds): nbgrader's assignment list reads the user's groups and discovers course services.
SERVER_TOKEN_SCOPES = [
    "users:activity!user",
    "read:users:name!user",
    "read:users:groups!user",
    "list:services",
    "read:services",
    # Lets the user's notebooks and dashboards call the lab service as the user, untyped.
    f"access:services!service={LAB_SERVICE}",
]


def grader_account(course_id: str) -> str:
    return GRADER_PREFIX + course_id


def institution_group(institution_id: str) -> str:
    return f"inst-{institution_id}"


def instructors_group(course_id: str) -> str:
    return f"instructors-{course_id}"


# ------------------------------------------------------------------ groups and users


def user_groups(site: Site) -> dict[str, list[str]]:
    """Each person's hub groups; the authenticator hands them over at every login."""
    found: dict[str, set[str]] = {
        p.username: {institution_group(p.institution), PEOPLE} for p in site.people
    }
    for course in site.courses:
        for username in course.students:
            found[username].add(f"nbgrader-{course.id}")
        for username in (*course.instructors, *course.graders):
            found[username].add(f"formgrade-{course.id}")
        for username in course.instructors:
            found[username].add(instructors_group(course.id))
    for course in site.courses:  # nbgrader finds a formgrader's course from its account's groups
        found[grader_account(course.id)] = {f"formgrade-{course.id}"}
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
        members[instructors_group(course.id)] = set()
    members[LAB_USERS], members[LAB_ADMINS], members[PEOPLE] = set(), set(), set()
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
    """People with the site role hub-admin (they get the role HUB_ADMIN_ROLE, not JupyterHub's
    `admin`)."""
    return sorted(p.username for p in site.with_role("hub-admin"))


HUB_ADMIN_ROLE = "hub-admin"
# JupyterHub's default admin scopes minus entering servers, minting tokens and shutting down,
# and minus changing groups: membership grants course and lab roles, and it comes from the site
# file and LTI only (a hub admin who joined formgrade-<course> would read its grades).
# `admin:users` is out too: its PATCH /users/<name> renames users and writes their `groups`
# and `roles` (renamed to an instructor's name, an account inherits their groups and roles at
# the next start), so hub admins read and remove users but never edit them.
# The users they see and act on are people only (group PEOPLE), never a course's grader account.
HUB_ADMIN_SCOPES = [
    "admin-ui",
    f"list:users!group={PEOPLE}",
    f"read:users!group={PEOPLE}",
    f"delete:users!group={PEOPLE}",
    f"admin:servers!group={PEOPLE}",
    "read:groups",
    "list:groups",
    "list:services",
    "read:services",
    "read:hub",
    "proxy",
    "read:tokens",
    "read:roles",
    "read:metrics",
]


# ------------------------------------------------------------------ roles


def _course_roles(course_id: str, instructors: list[str]) -> list[dict[str, Any]]:
    students = f"nbgrader-{course_id}"
    return [
        {
            "name": students,
            "description": f"Students of {course_id}: find its service",
            "groups": [students],
            "scopes": ["list:services", f"read:services!service={course_id}"],
        },
        {
            "name": f"formgrade-{course_id}",
            "description": f"The formgrader of {course_id}",
            "groups": [f"formgrade-{course_id}"],
            "users": [grader_account(course_id)],
            "scopes": [
                "list:services",
                f"read:services!service={course_id}",
                f"access:services!service={course_id}",
            ],
        },
        # Instructors see who their students are and when they were active, nothing else.
        {
            "name": f"instructor-{course_id}",
            "description": f"Instructors of {course_id}",
            "users": sorted(instructors),
            "groups": [instructors_group(course_id)],  # LTI
            "scopes": [
                f"list:users!group={students}",
                f"read:users:name!group={students}",
                f"read:users:groups!group={students}",
                f"read:users:activity!group={students}",
                f"read:groups!group={students}",
            ],
        },
        # The formgrader's own token: nbgrader's JupyterHubAuthPlugin reads the groups of the
        # students and of the formgrader's own account (that is how it finds its course).
        {
            "name": f"service-{course_id}",
            "description": f"The {course_id} formgrader service",
            "services": [course_id],
            "scopes": [
                f"list:users!group={students}",
                f"read:users:name!group={students}",
                f"read:users:groups!group={students}",
                f"read:users:name!user={grader_account(course_id)}",
                f"read:users:groups!user={grader_account(course_id)}",
            ],
        },
    ]


def load_roles(site: Site) -> list[dict[str, Any]]:
    """`c.JupyterHub.load_roles`; every user also keeps the default `user` role (own server)."""
    roles: list[dict[str, Any]] = []
    for course in site.courses:
        roles += _course_roles(course.id, course.instructors)
    roles += [
        {
            "name": LAB_USERS,
            "description": "Use the shared lab kits",
            "groups": [LAB_USERS],
            "scopes": [
                "list:services",
                f"read:services!service={LAB_SERVICE}",
                f"access:services!service={LAB_SERVICE}",
            ],
        },
        {
            "name": LAB_ADMINS,
            "description": "Administer the kits (in the lab service)",
            "groups": [LAB_ADMINS],
            "scopes": [
                "list:services",
                f"read:services!service={LAB_SERVICE}",
                f"access:services!service={LAB_SERVICE}",
            ],
        },
        # The lab service maps callers and bookings to courses and institutions (groups).
        {
            "name": "lab-service",
            "description": "The lab service's own token",
            "services": [LAB_SERVICE],
            "scopes": ["list:users", "read:users:name", "read:users:groups"],
        },
        # Every person may open the front door (it shows each only what their groups say).
        {
            "name": "front-door",
            "description": "Open the Smart City Lab front door",
            "groups": [PEOPLE],
            "scopes": [f"access:services!service={HOME_SERVICE}"],
        },
        {
            "name": HUB_ADMIN_ROLE,
            "description": "Run the hub, without entering servers",
            "users": admin_users(site),
            "scopes": HUB_ADMIN_SCOPES,
        },
        # The job runner calls the lab service (claim, finish, score) and nothing of the hub.
        {
            "name": JOB_RUNNER_SERVICE,
            "description": "Run experiment jobs' controllers on the kits",
            "services": [JOB_RUNNER_SERVICE],
            "scopes": [f"access:services!service={LAB_SERVICE}"],
        },
        # jupyterhub-idle-culler's documented minimum.
        {
            "name": CULLER_SERVICE,
            "description": "Stop idle servers",
            "services": [CULLER_SERVICE],
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        },
        # The class warm-up: a course's students (the group's members) and their servers,
        # nobody else's. `servers` is JupyterHub's narrowest scope that starts a server.
        {
            "name": WARMUP_SERVICE,
            "description": "Start a course's students' servers before its booked slot",
            "services": [WARMUP_SERVICE],
            "scopes": [
                scope
                for c in site.courses
                for scope in (
                    f"read:groups!group=nbgrader-{c.id}",
                    f"servers!group=nbgrader-{c.id}",
                )
            ],
        },
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
    return held


def scopes_of(site: Site, username: str) -> set[str]:
    """Unexpanded scopes of a hub user, for checks and tests."""
    return {scope for role in roles_of(site, username) for scope in role["scopes"]}


# ------------------------------------------------------------------ services


def venv_command(name: str) -> str:
    """A console script of the platform's own environment (the hub runs from it)."""
    return str(Path(sys.executable).parent / name)


def service_environment(runtime: Runtime) -> dict[str, str]:
    """What every server (users' and formgraders') needs to find the platform."""
    return {
        "JUPYTER_CONFIG_PATH": str(JUPYTER_CONFIG_DIR),  # nbgrader's multi-course settings
        "JUPYTER_PATH": str(VOILA_DATA_DIR),  # the dashboards' Voilà template
        "SMARTLAB_EXCHANGE": str(runtime.exchange),
        "SMARTLAB_LAB_URL": runtime.lab_url,
        # the kits of the user's courses for JupyterLab's tiles (labs/jupyterlab_links.py)
        "SMARTLAB_SITE": str(Path(runtime.site).resolve()),
        # nbgrader runs alembic from PATH: the environment's bin first.
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
    }


def singleuser_args(runtime: Runtime) -> list[str]:
    # Without isolation a root hub starts servers as root; jupyter-server refuses that by default.
    return ["--allow-root"] if not runtime.isolate and os.geteuid() == 0 else []


def formgrader_service(course_id: str, runtime: Runtime) -> dict[str, Any]:
    """One course's formgrader as in nbgrader's demo_multiple_classes."""
    account = grader_account(course_id)
    service: dict[str, Any] = {
        "name": course_id,  # nbgrader: service name == CourseDirectory.course_id
        "url": f"http://127.0.0.1:{runtime.formgrader_ports.get(course_id, 0)}",
        "command": [venv_command("jupyterhub-singleuser"), *singleuser_args(runtime)],
        "cwd": str(runtime.home(account)),
        "environment": {
            **service_environment(runtime),
            "JUPYTERHUB_DEFAULT_URL": "/formgrader",
            "HOME": str(runtime.home(account)),
        },
        "oauth_no_confirm": True,
    }
    if runtime.isolate:
        service["user"] = account  # the course files belong to it, not to the hub
        # Student code then runs as a sandbox account, never as the grader (grader/).
        service["environment"][SOCKET_ENV] = str(runtime.sandbox_socket)
    return service


def lab_service(runtime: Runtime) -> dict[str, Any]:
    """The lab service, managed by the hub: HubOAuth and the hub's groups say who calls."""
    state = Path(runtime.state_dir)
    return {
        "name": LAB_SERVICE,
        "url": runtime.lab_url,
        "display": True,
        "oauth_no_confirm": True,
        "command": [
            sys.executable,
            "-m",
            "hub_config.cli",
            "lab",
            "serve",
            "--config",
            str(state / LAB_SERVICE_CONFIG),
            "--state-dir",
            str(state),
            "--mqtt-port",
            str(runtime.mqtt_port),
            "--port",
            str(runtime.lab_port),
        ],
        "environment": {"PATH": service_environment(runtime)["PATH"]},
    }


def job_runner_service(site: Site, runtime: Runtime) -> dict[str, Any]:
    """The runner of controller jobs. It runs as the hub's account, root: it forks the grading
    sandbox for each controller, one slot per kit (a kit runs one job at a time, and a granted
    job that waits for a slot would miss its session's heartbeat). Its hub token
    (JUPYTERHUB_API_TOKEN) is what the lab service knows it by (`job_runner_service`); the
    sandboxed controller reaches the broker only through the broker's Unix socket."""
    return {
        "name": JOB_RUNNER_SERVICE,
        "command": [
            sys.executable,
            "-m",
            "hub_config.cli",
            "jobs",
            "run",
            "--state-dir",
            str(runtime.state_dir),
            "--mqtt-port",
            str(runtime.mqtt_port),
            "--slots",
            str(max(1, len(site.kits))),
        ],
        "environment": {
            "PATH": service_environment(runtime)["PATH"],
            SERVICE_URL_ENV: runtime.lab_url,
            BROKER_SOCKET_ENV: str(runtime.broker_socket),
        },
    }


def home_directory(site: Site) -> dict[str, Any]:
    """The site file's public facts the front door shows (labs.home.model.Directory): course
    titles and kits, kit names, the hub admins' names; no password hash, no person's details."""
    return {
        "courses": [{"id": c.id, "title": c.title, "kits": list(c.kits)} for c in site.courses],
        "kit_names": {k.id: {"en": k.name, "ru": k.ru.name if k.ru else k.name} for k in site.kits},
        "hub_admins": admin_users(site),
    }


def home_service(runtime: Runtime, site: Site) -> dict[str, Any]:
    """The front door (labs/home/). It runs as the hub's account: to count a course's
    submissions it lists the exchange's inbound folders, which nbgrader makes writable but not
    readable by others (it reads names only, through descriptors that follow no link). Its
    OAuth token may call the lab service as the person and read their name and groups."""
    return {
        "name": HOME_SERVICE,
        "url": f"http://127.0.0.1:{runtime.home_port}",
        "display": False,  # it is the hub's home page, not an entry of the Services menu
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": [
            f"access:services!service={LAB_SERVICE}",
            "read:users:name!user",
            "read:users:groups!user",
        ],
        "command": [sys.executable, "-m", "labs.home", "--port", str(runtime.home_port)],
        "environment": {
            "PATH": service_environment(runtime)["PATH"],
            "SMARTLAB_LAB_URL": runtime.lab_url,
            "SMARTLAB_EXCHANGE": str(runtime.exchange),
            "SMARTLAB_SCHEDULE": str(Path(runtime.state_dir) / SCHEDULE_FILE),
            "SMARTLAB_WARMUPS": str(Path(runtime.state_dir) / WARMUP_RECORD),
            "SMARTLAB_HOME_DIRECTORY": json.dumps(home_directory(site)),
        },
    }


def status_board_service(runtime: Runtime) -> dict[str, Any]:
    """Public, read-only board (Voilà, a bounded pool of kernels, a read-only MQTT account):
    the proxy sends anyone to it, and it holds no hub scope at all. Started by the hub (root),
    it makes its MQTT account, then runs Voilà and the kernels as its own Unix account."""
    command = [
        sys.executable,
        "-m",
        "hub_config.cli",
        "board",
        "--state-dir",
        runtime.state_dir,
        "--mqtt-port",
        str(runtime.mqtt_port),
    ]
    if runtime.isolate:
        command += ["--user", BOARD_ACCOUNT, "--home", str(runtime.home(BOARD_ACCOUNT))]
    return {
        "name": STATUS_SERVICE,
        "url": f"http://127.0.0.1:{runtime.status_port}",
        "display": True,
        "command": command,
        "environment": {
            "PATH": service_environment(runtime)["PATH"],
            # the lab service's public route (/api/board): no token
            "SMARTLAB_LAB_URL": runtime.lab_url,
        },
    }


def services(site: Site, runtime: Runtime) -> list[dict[str, Any]]:
    """`c.JupyterHub.services`: course formgraders, lab service, job runner, status board,
    front door, idle culler, class warm-up (unless the site's `servers.warmup_minutes` is 0)."""
    found = [formgrader_service(c.id, runtime) for c in site.courses]
    found.append(lab_service(runtime))
    found.append(job_runner_service(site, runtime))
    found.append(status_board_service(runtime))
    found.append(home_service(runtime, site))
    found.append(
        {
            "name": CULLER_SERVICE,
            "command": [
                sys.executable,
                "-m",
                "jupyterhub_idle_culler",
                f"--timeout={site.servers.idle_timeout_minutes * 60}",
            ],
        }
    )
    if site.servers.warmup_minutes:
        found.append(warmup_service(site, runtime))
    return found


def warmup_service(site: Site, runtime: Runtime) -> dict[str, Any]:
    """The class warm-up. It runs as the hub's account, as the lab service does, because it
    reads the lab service's database (read-only); its hub role is WARMUP_SERVICE's."""
    state = Path(runtime.state_dir)
    return {
        "name": WARMUP_SERVICE,
        "command": [
            sys.executable,
            "-m",
            "hub_config.class_warmup",
            "--lead-minutes",
            str(site.servers.warmup_minutes),
            "--mem-limit",
            site.servers.mem_limit,
            "--record",
            str(state / WARMUP_RECORD),
        ],
        # Not on the command line, which every account can read: the URL may hold a password.
        "environment": {LAB_DB_URL_ENV: runtime.lab_db_url or sqlite_url(str(state / LAB_DB_FILE))},
    }


# ------------------------------------------------------------------ login


def set_groups(user: orm.User, names: list[str]) -> None:
    """Make `names` the user's groups in the hub's database, creating missing groups."""
    db = object_session(user)
    if db is None or {g.name for g in user.groups} == set(names):
        return
    groups = []
    for name in names:
        group = orm.Group.find(db, name)
        if group is None:
            group = orm.Group(name=name)
            db.add(group)
        groups.append(group)
    user.groups = groups
    db.commit()


class SiteAuthenticator(Authenticator):
    """Log in with the site file's password hashes; the site file also sets the groups."""

    site_path = Unicode(
        help="The site file; default $SMARTLAB_SITE or site_config/demo-site.yaml."
    ).tag(config=True)

    @default("site_path")
    def _site_path_default(self) -> str:
        return str(default_site())

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

    def add_user(self, user: Any) -> None:
        """Called at startup for every hub user: accounts that never log in (the course grader
        accounts) get their groups here; people get theirs again at each login."""
        super().add_user(user)
        orm_user = getattr(user, "orm_user", user)
        groups = user_groups(self.site()).get(user.name)
        if groups is not None:
            set_groups(orm_user, groups)
        elif LAB_ADMINS in {g.name for g in orm_user.groups}:
            # Only the site file names lab admins: whoever else is in the group leaves it.
            set_groups(orm_user, sorted(g.name for g in orm_user.groups if g.name != LAB_ADMINS))

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any] | None:
        site = self.site()
        person = site.person(data.get("username", ""))
        # Grader accounts are not people: they have no password and cannot log in here.
        if person is None:
            return None
        # Argon2 takes tens of milliseconds: hash in a thread, not in the hub's event loop.
        password = data.get("password", "")
        if not await asyncio.to_thread(verify_password, password, person.password_hash):
            return None
        return {
            "name": person.username,
            "groups": user_groups(site)[person.username],
            "admin": False,
        }  # hub admins hold the role hub-admin instead
