"""The site file: institutions, courses, people and kits of one Smart City Lab installation.

The site file is the platform's one source of configuration. The hub's groups, roles, services
and users are derived from it (hub_config/hub.py); its `kits:` section is validated by
site_config.kits and its `sites:` (the centre and partner sites) by site_config.sites. Every
error is one line: `file: field: reason`.

Passwords never appear in the file, only hashes: Argon2 (`$argon2id$…`, what `hash_password`
and `smartlab hash-password` make), bcrypt (`$2b$…`, with the `bcrypt` extra) or, from older
site files, `$pbkdf2-sha256$<rounds>$<salt>$<checksum>` (passlib's format, adapted base64
without padding); all three are accepted at login.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hardware_kits.descriptor import DescriptorError, load_models, read_yaml
from site_config.kits import KitEntry, parse_kits
from site_config.platform_accounts import (
    GRADER_PREFIX,
    clashes_with_the_platform,
    reserved_for_the_platform,
)
from site_config.sites import Sites, parse_sites

# nbgrader derives the course from the group name after the first hyphen, and the course id is
# also a hub service name and a URL path segment: keep it plain.
COURSE_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# A valid Unix login and JupyterHub name (useradd's default pattern, 32 characters at most).
USERNAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# Hub services that are not courses; a course with one of these ids would take over its URL.
RESERVED_SERVICE_NAMES = frozenset({"lab", "status"})
LOCAL_HTTP = re.compile(r"^http://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?(/|$)")
# An LTI username is <prefix>-<LMS user id> or <prefix>_<12-character hash>: at most 32.
LMS_PREFIX = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
LMS_PREFIX_MAX = 19

PBKDF2_PREFIX = "$pbkdf2-sha256$"
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
ARGON2_PREFIXES = ("$argon2id$", "$argon2i$", "$argon2d$")
HASH_COMMAND = "smartlab hash-password"
PBKDF2_ROUNDS = 29000  # passlib's default for pbkdf2_sha256

Role = Literal["student", "instructor", "grader", "lab-admin", "hub-admin"]


def _plain_id(value: str) -> str:
    if not COURSE_ID.match(value):
        raise ValueError("must be lowercase letters, digits and single hyphens")
    return value


# Institution and course ids: they become group, service and folder names.
Id = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_plain_id)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _https_url(value: str) -> str:
    # The platform's keys and tokens come from these URLs: plain HTTP only on this machine.
    if not (value.startswith("https://") or LOCAL_HTTP.match(value)):
        raise ValueError("must be an https:// URL (http:// only for localhost)")
    return value


def _as_text(value: Any) -> Any:
    # LMS ids are often numbers (Moodle deployment 1, Canvas client 10000000000001, course 12);
    # YAML reads them as ints, but LTI carries them as strings.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    if isinstance(value, dict):
        return {_as_text(k): v for k, v in value.items()}
    return value


Url = Annotated[str, AfterValidator(_https_url)]
LmsId = Annotated[str, BeforeValidator(_as_text), Field(min_length=1, max_length=255)]


class LmsPlatform(_Strict):
    """One LMS of an institution (an LTI 1.3 platform) as registered with this tool.

    A launch is trusted when it comes from `issuer` for one of `client_ids` and
    `deployment_ids`, signed with a key of `jwks_uri`. `contexts` links LMS courses (the LTI
    context id) to the site's courses. Users become `<username_prefix>-<LMS user id>`.
    """

    issuer: str = Field(min_length=1)
    client_ids: list[LmsId] = Field(min_length=1)
    deployment_ids: list[LmsId] = Field(min_length=1)
    authorization_endpoint: Url
    token_endpoint: Url
    jwks_uri: Url
    # The `aud` of the tool's client assertions, when the LMS wants something else than
    # token_endpoint (Moodle and Canvas take token_endpoint).
    token_audience: str | None = None
    username_prefix: str | None = None  # default: the institution's id
    contexts: Annotated[dict[LmsId, str], BeforeValidator(_as_text)] = {}

    def prefix(self, institution: str) -> str:
        return self.username_prefix or institution


class RussianName(_Strict):
    """A name in Russian beside the (English) `name`, as descriptors carry it (`ru: {name}`)."""

    name: str = Field(min_length=1)


class Institution(_Strict):
    id: Id
    name: str = Field(min_length=1)
    ru: RussianName | None = None  # pages in Russian show it (else `name`)
    kind: Literal["centre", "university", "academy"]  # academy: a partner, not a university
    lms: list[LmsPlatform] = []  # its LMSs; their users log in through LTI 1.3 launches


class Course(_Strict):
    id: Id
    title: str = Field(min_length=1)
    institutions: list[str] = Field(min_length=1)
    instructors: list[str] = Field(min_length=1)
    graders: list[str] = []
    students: list[str] = []
    kits: list[str] = []


class Person(_Strict):
    username: str
    name: str = Field(min_length=1)
    institution: str
    roles: list[Role] = Field(min_length=1)
    password_hash: str

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not USERNAME.match(value):
            raise ValueError(
                "must start with a lowercase letter and have at most 32 lowercase "
                "letters, digits, '-' or '_'"
            )
        return value

    @field_validator("password_hash")
    @classmethod
    def _hashed(cls, value: str) -> str:
        if value.startswith(BCRYPT_PREFIXES):
            return value
        if value.startswith(ARGON2_PREFIXES):
            _check_argon2(value)
            return value
        if value.startswith(PBKDF2_PREFIX):
            _parse_pbkdf2(value)  # raises ValueError on a malformed hash
            return value
        raise ValueError(
            f"must be an Argon2, bcrypt or `$pbkdf2-sha256$` hash, never a plain password "
            f"({HASH_COMMAND})"
        )


class Servers(_Strict):
    """What each user's server may use; enforced where the spawner can (site_config/cgroups.py)."""

    mem_limit: str = Field("2G", pattern=r"^\d+(\.\d+)?[KMGT]?$")
    cpu_limit: float = Field(1.0, gt=0)
    idle_timeout_minutes: int = Field(60, ge=5)
    # Servers that may start at once (the rest wait in line); unset: the hub's CPU cores.
    concurrent_starts: int | None = Field(None, ge=1, le=1000)
    # Start a course's students' servers this long before a booked slot (0: never);
    # hub_config/class_warmup.py. Below the idle timeout, or the culler stops them first.
    warmup_minutes: int = Field(10, ge=0, le=180)

    @model_validator(mode="after")
    def _warmup_before_culling(self) -> Servers:
        if self.warmup_minutes >= self.idle_timeout_minutes:
            raise ValueError(
                f"warmup_minutes ({self.warmup_minutes}) must be below idle_timeout_minutes "
                f"({self.idle_timeout_minutes}): the idle culler would stop warmed servers "
                "before the slot starts"
            )
        return self


class SiteSpec(_Strict):
    """Everything but `kits:`, which hardware_kits.fleet validates."""

    institutions: list[Institution] = Field(min_length=1)
    courses: list[Course] = []
    people: list[Person] = []
    servers: Servers = Servers()
    kits: list[Any]  # checked by parse_kits
    sites: list[Any] | None = None  # checked by parse_sites


class Site(BaseModel):
    """A validated site file."""

    model_config = ConfigDict(frozen=True)

    source: str
    institutions: list[Institution]
    courses: list[Course]
    people: list[Person]
    kits: list[KitEntry]
    sites: Sites
    servers: Servers = Servers()

    def person(self, username: str) -> Person | None:
        return next((p for p in self.people if p.username == username), None)

    def course(self, course_id: str) -> Course | None:
        return next((c for c in self.courses if c.id == course_id), None)

    def with_role(self, role: str) -> list[Person]:
        return [p for p in self.people if role in p.roles]


# ------------------------------------------------------------------ loading


def _loc(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "-"


def parse_site(data: Any, source: str, models: dict[str, dict] | None = None) -> Site:
    """Validate a parsed site file; raise DescriptorError (`source: field: reason`)."""
    kits = parse_kits(data, source, models if models is not None else load_models())
    sites = parse_sites(data, source, kits)
    try:
        spec = SiteSpec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise DescriptorError(f"{source}: {_loc(first)}: {first['msg']}") from None
    for field, reason in _cross_field_errors(spec, {k.id for k in kits}):
        raise DescriptorError(f"{source}: {field}: {reason}")
    return Site(
        source=source,
        institutions=spec.institutions,
        courses=spec.courses,
        people=spec.people,
        kits=kits,
        sites=sites,
        servers=spec.servers,
    )


def load_site(path: Path | str, models: dict[str, dict] | None = None) -> Site:
    path = Path(path)
    return parse_site(read_yaml(path), str(path), models)


def _duplicates(values: list[str], section: str, field: str) -> list[tuple[str, str]]:
    seen: set[str] = set()
    found = []
    for i, value in enumerate(values):
        if value in seen:
            found.append((f"{section}.{i}.{field}", f"{value!r} is used twice"))
        seen.add(value)
    return found


def _cross_field_errors(spec: SiteSpec, kit_ids: set[str]) -> list[tuple[str, str]]:
    """(field, reason) of every broken reference, in file order; the first one is reported."""
    errors = _duplicates([i.id for i in spec.institutions], "institutions", "id")
    errors += _duplicates([p.username for p in spec.people], "people", "username")
    errors += _duplicates([c.id for c in spec.courses], "courses", "id")
    institutions = {i.id for i in spec.institutions}
    people = {p.username: p for p in spec.people}
    graders = {GRADER_PREFIX + c.id for c in spec.courses}
    for i, person in enumerate(spec.people):
        if person.institution not in institutions:
            errors.append((f"people.{i}.institution", f"no institution {person.institution!r}"))
        if person.username in graders:
            errors.append(
                (f"people.{i}.username", f"{person.username!r} is the grader account of a course")
            )
        elif why := reserved_for_the_platform(person.username):
            errors.append((f"people.{i}.username", why))
    for i, course in enumerate(spec.courses):
        errors += _course_errors(f"courses.{i}", course, institutions, people, kit_ids)
    errors += _lms_errors(spec)
    return errors


def lms_username_pattern(prefix: str) -> re.Pattern[str]:
    """The hub usernames an LMS with this prefix hands out (hub_config.lti.platforms)."""
    return re.compile(rf"^{re.escape(prefix)}(-[a-z0-9]+|_[a-z2-7]{{12}})$")


def _lms_errors(spec: SiteSpec) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    courses = {c.id: c for c in spec.courses}
    prefixes: dict[str, str] = {}
    registrations: dict[tuple[str, str], str] = {}
    for i, inst in enumerate(spec.institutions):
        for j, lms in enumerate(inst.lms):
            where = f"institutions.{i}.lms.{j}"
            prefix = lms.prefix(inst.id)
            if not LMS_PREFIX.match(prefix) or len(prefix) > LMS_PREFIX_MAX:
                errors.append(
                    (
                        f"{where}.username_prefix",
                        f"{prefix!r} cannot begin usernames: it needs a letter first and "
                        f"at most {LMS_PREFIX_MAX} characters (set username_prefix)",
                    )
                )
            elif prefix + "-" == GRADER_PREFIX:
                errors.append(
                    (
                        f"{where}.username_prefix",
                        f"{prefix!r} would clash with the courses' grader accounts",
                    )
                )
            elif why := clashes_with_the_platform(prefix):
                errors.append((f"{where}.username_prefix", why))
            elif prefix in prefixes:
                errors.append(
                    (
                        f"{where}.username_prefix",
                        f"{prefix!r} already names the users of {prefixes[prefix]}; "
                        "set a different username_prefix",
                    )
                )
            prefixes.setdefault(prefix, where)
            for field in ("client_ids", "deployment_ids"):
                values: list[str] = getattr(lms, field)
                errors += [
                    (f"{where}.{field}.{k}", f"{value!r} is used twice")
                    for k, value in enumerate(values)
                    if value in values[:k]
                ]
            # Cloud Canvas shares one issuer among all schools: the client id tells them apart.
            for k, client in enumerate(lms.client_ids):
                key = (lms.issuer, client)
                if key in registrations:
                    errors.append(
                        (
                            f"{where}.client_ids.{k}",
                            f"issuer {lms.issuer!r} with client id {client!r} is also "
                            f"declared at {registrations[key]}",
                        )
                    )
                registrations.setdefault(key, where)
            for context, course_id in lms.contexts.items():
                course = courses.get(course_id)
                if course is None:
                    errors.append((f"{where}.contexts.{context}", f"no course {course_id!r}"))
                elif inst.id not in course.institutions:
                    errors.append(
                        (
                            f"{where}.contexts.{context}",
                            f"{inst.id!r} does not take part in {course_id!r}",
                        )
                    )
    for k, person in enumerate(spec.people):
        for prefix, where in prefixes.items():
            if lms_username_pattern(prefix).match(person.username):
                errors.append(
                    (
                        f"people.{k}.username",
                        f"{person.username!r} is a username of the LMS at {where}; "
                        "rename the person or set that LMS's username_prefix",
                    )
                )
    return errors


def _course_errors(
    where: str, course: Course, institutions: set[str], people: dict[str, Person], kit_ids: set[str]
) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    if course.id in RESERVED_SERVICE_NAMES:
        errors.append(
            (
                f"{where}.id",
                f"{course.id!r} is the name of another hub service "
                f"({', '.join(sorted(RESERVED_SERVICE_NAMES))})",
            )
        )
    for j, inst in enumerate(course.institutions):
        if inst not in institutions:
            errors.append((f"{where}.institutions.{j}", f"no institution {inst!r}"))
    for j, kit in enumerate(course.kits):
        if kit not in kit_ids:
            errors.append((f"{where}.kits.{j}", f"no kit {kit!r}"))
    for field, role in (
        ("instructors", "instructor"),
        ("graders", "grader"),
        ("students", "student"),
    ):
        members: list[str] = getattr(course, field)
        errors += _duplicates(members, where, field)
        for j, username in enumerate(members):
            person = people.get(username)
            if person is None:
                errors.append((f"{where}.{field}.{j}", f"no person {username!r}"))
            elif role not in person.roles:
                errors.append((f"{where}.{field}.{j}", f"{username!r} lacks the {role} role"))
            elif role == "student" and person.institution not in course.institutions:
                errors.append(
                    (
                        f"{where}.{field}.{j}",
                        f"{username!r} is from {person.institution!r}, which does not "
                        f"take part in {course.id!r}",
                    )
                )
    return errors


# ------------------------------------------------------------------ passwords


def _ab64_encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=").replace("+", ".")


def _ab64_decode(text: str) -> bytes:
    text = text.replace(".", "+")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _parse_pbkdf2(value: str) -> tuple[int, bytes, bytes]:
    parts = value.split("$")  # '', 'pbkdf2-sha256', rounds, salt, checksum
    if len(parts) != 5 or not parts[2].isdigit():
        raise ValueError("a pbkdf2-sha256 hash is $pbkdf2-sha256$<rounds>$<salt>$<checksum>")
    try:
        salt, checksum = _ab64_decode(parts[3]), _ab64_decode(parts[4])
    except ValueError:
        raise ValueError("the salt or checksum of the pbkdf2-sha256 hash is not base64") from None
    if int(parts[2]) < 1000 or len(checksum) != 32:
        raise ValueError("the pbkdf2-sha256 hash needs ≥ 1000 rounds and a 32-byte checksum")
    return int(parts[2]), salt, checksum


def _check_argon2(value: str) -> None:
    from argon2 import extract_parameters
    from argon2.exceptions import InvalidHashError

    try:
        extract_parameters(value)
    except (InvalidHashError, ValueError):
        raise ValueError("the Argon2 hash is malformed ($argon2id$v=19$m=…,t=…,p=…$…)") from None


def hash_password(password: str) -> str:
    """A new hash: Argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile)."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def pbkdf2_hash(password: str, rounds: int = PBKDF2_ROUNDS) -> str:
    """The older PBKDF2-SHA256 form, still accepted; for tests and existing files only."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    return f"{PBKDF2_PREFIX}{rounds}${_ab64_encode(salt)}${_ab64_encode(digest)}"


def _verify_argon2(password: str, password_hash: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def verify_password(password: str, password_hash: str) -> bool:
    """True if `password` matches; bcrypt hashes need the optional `bcrypt` package."""
    if password_hash.startswith(ARGON2_PREFIXES):
        return _verify_argon2(password, password_hash)
    if password_hash.startswith(PBKDF2_PREFIX):
        rounds, salt, checksum = _parse_pbkdf2(password_hash)
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
        return hmac.compare_digest(digest, checksum)
    if password_hash.startswith(BCRYPT_PREFIXES):
        try:
            import bcrypt  # optional: only sites with bcrypt hashes need it
        except ImportError:
            return False
        return bcrypt.checkpw(password.encode(), password_hash.encode())
    return False


# ------------------------------------------------------------------ the demo's public passwords

DEMO_PASSWORD = "demo-{}"  # the demo site's passwords, printed by `smartlab up` and in docs


def demo_password_accounts(site: Site) -> list[str]:
    """The people whose password is still the public demo one (`demo-<username>`)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # hashing frees the GIL
        found = pool.map(
            lambda p: verify_password(DEMO_PASSWORD.format(p.username), p.password_hash),
            site.people,
        )
    return [p.username for p, demo in zip(site.people, found, strict=True) if demo]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def refuse_public_demo_passwords(site: Site, host: str) -> None:
    """Raise ValueError (one line, English and Russian) when `host` is reachable from other
    machines and someone still has a demo password: anyone could log in as them."""
    if is_loopback(host):
        return
    names = demo_password_accounts(site)
    if names:
        listed = ", ".join(names)
        raise ValueError(
            f"refusing to serve on {host}: {listed} still have the public demo password "
            f"demo-<username>; set new hashes in the site file ({HASH_COMMAND}) or serve on "
            f"127.0.0.1 / отказ запуска на {host}: у {listed} открытый демо-пароль "
            f"demo-<имя>; задайте новые хэши в файле площадки ({HASH_COMMAND}) или "
            "запускайте на 127.0.0.1"
        )


# ------------------------------------------------------------------ `smartlab hash-password`


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print the Argon2 hash of a password typed twice (or read from stdin with --stdin)."""
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password / пароль: ")
        if password != getpass.getpass("again / ещё раз: "):
            print("the passwords differ / пароли не совпадают", file=sys.stderr)
            return 1
    if not password:
        raise ValueError("empty password / пустой пароль")
    print(hash_password(password))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "hash-password", help="print a password's hash (Argon2) for the site file"
    )
    command.add_argument("--stdin", action="store_true", help="read the password from stdin")
    command.set_defaults(run=cmd_hash_password)


def main(argv: list[str] | None = None) -> int:
    """`python -m site_config.site hash-password`: the same as `smartlab hash-password`."""
    parser = argparse.ArgumentParser(prog="python -m site_config.site")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
