"""The platform's own account names: MQTT accounts, Unix accounts and hub users that the
platform makes for itself. No person of a site file and no LMS user may take one, or they
would act with that account's rights (the lab service's, a kit's, a grader's)."""

from __future__ import annotations

SERVICE_ACCOUNT = "lab-service"  # the lab service's MQTT account: watches, sends safe states
BOARD_ACCOUNT = "status-board"  # the public board's MQTT account and, as root, Unix account
DEMO_OBSERVER = "demo-observer"  # the watch account `smartlab up` prints
BROKER_ADMIN = "smartlab-admin"  # the broker's dynamic-security administrator
# Kits answer commands that name no usable response topic on `$ack/anonymous`
# (hardware_kits/kitcore.py): an account of that name would read those refusals.
ANONYMOUS_REQUESTER = "anonymous"
RESERVED_NAMES = frozenset(
    {SERVICE_ACCOUNT, BOARD_ACCOUNT, DEMO_OBSERVER, BROKER_ADMIN, ANONYMOUS_REQUESTER}
)

GRADER_PREFIX = "grader-"  # one grader account per course (hub user and Unix account)
CONTROL_PREFIX = "ctl-"  # a user's MQTT control account
KIT_PREFIX = "kit-"  # a kit's MQTT account
CAMERA_PREFIX = "camera-"  # a kit's camera companion's MQTT account
BRIDGE_PREFIX = "bridge-"  # a partner site's bridge account at the centre's broker
SANDBOX_PREFIX = "smartlab-sb"  # the grading sandbox's Unix accounts
JOB_PREFIX = "job-"  # an experiment job's MQTT account, for its session only
RESERVED_PREFIXES = (
    JOB_PREFIX,
    GRADER_PREFIX,
    CONTROL_PREFIX,
    KIT_PREFIX,
    CAMERA_PREFIX,
    BRIDGE_PREFIX,
    SANDBOX_PREFIX,
)


def reserved_for_the_platform(name: str) -> str | None:
    """Why `name` cannot be a person's username (one line), or None if it can."""
    if name in RESERVED_NAMES:
        return f"{name!r} is one of the platform's own accounts"
    for prefix in RESERVED_PREFIXES:
        if name.startswith(prefix):
            return f"names starting with {prefix!r} are the platform's own accounts"
    return None


def clashes_with_the_platform(prefix: str) -> str | None:
    """Why an LMS's username prefix could hand out one of the platform's names (LMS users are
    named `<prefix>-<id>` or `<prefix>_<hash>`), or None if it cannot."""
    for start in (prefix + "-", prefix + "_"):
        for name in RESERVED_NAMES:
            if name.startswith(start):
                return f"{prefix!r} could name an LMS user {name!r}, one of the platform's accounts"
        for reserved in RESERVED_PREFIXES:
            if reserved.startswith(start) or start.startswith(reserved):
                return f"{prefix!r} could name LMS users {reserved}…, the platform's own accounts"
    return None
