"""The site's LMS platforms, LTI usernames, and LTI roles → hub groups.

Pure functions of the site file: no I/O, no hub. The hub's platform roles are groups:
`inst-<institution>`, `lab-users`, students `nbgrader-<course>`, instructors and graders
`formgrade-<course>`, instructors additionally `instructors-<course>`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from site_config.platform_accounts import reserved_for_the_platform
from site_config.site import LmsPlatform, Site

MAX_USERNAME = 32
HASH_CHARS = 12  # base32 characters: 60 bits, ample for the users of one LMS
LITERAL_SUB = re.compile(r"^[a-z0-9]+$")

LAB_USERS = "lab-users"
PEOPLE = "people"  # every person, as hub_config.hub.PEOPLE
LAB_ADMINS = "lab-admins"  # the site file alone names lab admins: an LTI user never keeps it
# Groups this module hands out; other groups a user holds are kept as they are.
MANAGED_PREFIXES = ("inst-", "nbgrader-", "formgrade-", "instructors-")

# LTI 1.3 role vocabularies (LTI core spec, appendix A.2): context roles, full or short form.
MEMBERSHIP = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
LEARNER = f"{MEMBERSHIP}Learner"
INSTRUCTOR = f"{MEMBERSHIP}Instructor"
TEACHING_ASSISTANT = (
    "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"
)

STUDENT, COURSE_INSTRUCTOR, GRADER = "student", "instructor", "grader"


class ReservedUsername(ValueError):
    """An LMS user would be named like one of the platform's own accounts; str() says why."""


@dataclass(frozen=True)
class Platform:
    """One LMS of one institution, as the hub trusts it."""

    key: str  # the username prefix: unique among the site's platforms, names them in records
    institution: str
    issuer: str
    client_ids: tuple[str, ...]
    deployment_ids: tuple[str, ...]
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    token_audience: str
    contexts: dict[str, str] = field(hash=False, compare=False)

    @classmethod
    def from_site(cls, institution: str, lms: LmsPlatform) -> Platform:
        return cls(
            key=lms.prefix(institution),
            institution=institution,
            issuer=lms.issuer,
            client_ids=tuple(lms.client_ids),
            deployment_ids=tuple(lms.deployment_ids),
            authorization_endpoint=lms.authorization_endpoint,
            token_endpoint=lms.token_endpoint,
            jwks_uri=lms.jwks_uri,
            token_audience=lms.token_audience or lms.token_endpoint,
            contexts=dict(lms.contexts),
        )

    def username(self, sub: str) -> str:
        """The hub username of the LMS user `sub`: stable, and unique across platforms.

        `<prefix>-<sub>` when the LMS id is short lowercase letters and digits (Moodle's numeric
        ids), else `<prefix>_<hash>`. The prefix holds no `_` and a literal sub no `-`, so a
        name splits back into (prefix, sub) one way only: two LMSs never share a name.
        """
        literal = f"{self.key}-{sub}"
        if LITERAL_SUB.match(sub) and len(literal) <= MAX_USERNAME:
            name = literal
        else:
            digest = hashlib.sha256(sub.encode()).digest()
            name = f"{self.key}_{base64.b32encode(digest).decode().lower()[:HASH_CHARS]}"
        # The site check refuses prefixes that could produce one; this holds whatever the site.
        if why := reserved_for_the_platform(name):
            raise ReservedUsername(f"LMS user {sub!r} would be named {name!r}: {why}")
        return name


def platforms(site: Site) -> list[Platform]:
    return [Platform.from_site(inst.id, lms) for inst in site.institutions for lms in inst.lms]


def find_platform(site: Site, issuer: str, client_id: str | None) -> Platform | None:
    """The platform registered for (issuer, client_id); client_id may be left out if unique."""
    candidates = [p for p in platforms(site) if p.issuer == issuer]
    if client_id is not None:
        candidates = [p for p in candidates if client_id in p.client_ids]
    if len(candidates) != 1:
        return None
    return candidates[0]


def course_roles(lti_roles: list[str]) -> set[str]:
    """Platform roles in a course from the launch's LTI roles.

    A teaching assistant is a sub-role of Instructor (LMSs send both): grader, not instructor.
    Institution and system roles (administrator, …) give nothing in a course.
    """
    roles = set(lti_roles)
    found: set[str] = set()
    if roles & {LEARNER, "Learner"}:
        found.add(STUDENT)
    if TEACHING_ASSISTANT in roles or "TeachingAssistant" in roles:
        found.add(GRADER)
    elif roles & {INSTRUCTOR, "Instructor"}:
        found.add(COURSE_INSTRUCTOR)
    return found


def course_groups(course: str, role: str) -> set[str]:
    if role == STUDENT:
        return {f"nbgrader-{course}"}
    if role == COURSE_INSTRUCTOR:
        return {f"formgrade-{course}", f"instructors-{course}"}
    return {f"formgrade-{course}"}


def hub_groups(
    institution: str, enrolments: Iterable[tuple[str, str]], existing: Iterable[str] = ()
) -> list[str]:
    """Hub groups from an LTI user's (course, role) enrolments, merged with unmanaged ones.

    Students and instructors use the lab kits (as with the site's people); graders alone do not.
    """
    enrolments = list(enrolments)
    groups = {f"inst-{institution}", PEOPLE}
    for course, role in enrolments:
        groups |= course_groups(course, role)
    if any(role in (STUDENT, COURSE_INSTRUCTOR) for _, role in enrolments):
        groups.add(LAB_USERS)
    kept = {
        g
        for g in existing
        if g not in (LAB_USERS, LAB_ADMINS, PEOPLE) and not g.startswith(MANAGED_PREFIXES)
    }
    return sorted(groups | kept)
