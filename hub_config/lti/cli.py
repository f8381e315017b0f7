"""`smartlab lti show` (what LMS administrators enter) and `smartlab grades push` (passback)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hub_config.lti.keys import KEY_FILE, ToolKey
from hub_config.lti.platforms import platforms
from site_config.paths import LTI_DB_URL_ENV, default_site, default_state_dir
from site_config.site import load_site

LTI_FOLDER = "lti"


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--site",
        type=Path,
        default=default_site(),
        help="the site file (default: $SMARTLAB_SITE or the demo site)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="the platform's state folder; LTI records and the tool key are in "
        "its lti/ (default: $SMARTLAB_STATE_DIR or ./var)",
    )


def register(commands: argparse._SubParsersAction) -> None:
    lti = commands.add_parser("lti", help="LTI 1.3: what LMS administrators enter")
    sub = lti.add_subparsers(dest="lti_command", required=True, metavar="COMMAND")
    show = sub.add_parser(
        "show", help="print the tool's registration values and the site's LMS platforms"
    )
    show.add_argument(
        "--hub-url", required=True, help="the hub's public address, e.g. https://lab.example.org"
    )
    _add_common(show)
    show.set_defaults(run=run_show)


def run_show(args: argparse.Namespace) -> int:
    site = load_site(args.site)
    key = ToolKey.load_or_create(args.state_dir / LTI_FOLDER / KEY_FILE)
    base = args.hub_url.rstrip("/") + "/hub/lti"
    print(f"Tool URL / target link URI : {base}/launch")
    print(f"Redirection URI(s)         : {base}/launch")
    print(f"Initiate login URL         : {base}/login")
    print(f"Public keyset URL (JWKS)   : {base}/jwks")
    print(f"Canvas JSON configuration  : {base}/canvas.json")
    print(f"Tool key id (kid)          : {key.kid}")
    print("Public key (PEM):")
    print(key.public_pem().rstrip())
    for platform in platforms(site):
        print(
            f"\nLMS {platform.key} ({platform.institution}): issuer {platform.issuer}, "
            f"client ids {', '.join(platform.client_ids)}, "
            f"deployments {', '.join(platform.deployment_ids)}"
        )
        for context, course in sorted(platform.contexts.items()):
            print(f"  LMS course {context!r} → {course}")
    return 0


# ------------------------------------------------------------------ smartlab grades push


def register_grades(commands: argparse._SubParsersAction) -> None:
    """`smartlab grades export|push`: the grader's exports and this LTI grade transfer."""
    from grader.cli import add_export

    parser = commands.add_parser("grades", help="gradebook exports and LMS grade transfer")
    actions = parser.add_subparsers(dest="grades_action", required=True, metavar="ACTION")
    add_export(actions)
    add_push_command(actions)


def add_push_command(grades: argparse._SubParsersAction) -> None:
    """`push` under `smartlab grades`."""
    push = grades.add_parser(
        "push", help="send an assignment's scores to the LMSs of its LTI students (AGS)"
    )
    push.add_argument("course", help="course id")
    push.add_argument("assignment", help="nbgrader assignment name")
    _add_common(push)
    push.add_argument("--course-dir", help="the course folder (as for `smartlab grade`)")
    push.add_argument(
        "--lti-db-url",
        default=os.environ.get(LTI_DB_URL_ENV, ""),
        help="the LTI records' database when not lti.sqlite in the state folder "
        "(default $SMARTLAB_LTI_DB_URL)",
    )
    push.add_argument(
        "--attempts",
        type=int,
        default=4,
        help="tries per request before a score is reported failed (default 4)",
    )
    push.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        help="seconds before the first retry, doubling after (default 1)",
    )
    push.set_defaults(run=run_push)


def run_push(args: argparse.Namespace) -> int:
    from grader.app import find_course_dir
    from hub_config.lti.passback import Retry, push
    from hub_config.lti.store import LtiStore

    if args.attempts < 1 or args.backoff < 0:
        raise ValueError("--attempts must be at least 1 and --backoff not negative")
    site = load_site(args.site)
    folder = args.state_dir / LTI_FOLDER
    if not (folder / KEY_FILE).exists():
        raise FileNotFoundError(
            f"{folder / KEY_FILE}: no tool key; LMSs know the hub's key, "
            "so push from the hub's state folder (--state-dir)"
        )
    report = push(
        site,
        LtiStore(folder, args.lti_db_url),
        ToolKey.load_or_create(folder / KEY_FILE),
        args.course,
        args.assignment,
        find_course_dir(args.course, args.course_dir),
        Retry(attempts=args.attempts, backoff=args.backoff),
        progress=lambda line: print(f"pushing {line}", flush=True),
    )
    for problem in report.problems:
        print(f"not sent: {problem}", file=sys.stderr)
    for outcome in report.failed:
        print(
            f"failed: {outcome.username} ({outcome.platform} course {outcome.context_id!r}): "
            f"{outcome.error}",
            file=sys.stderr,
        )
    print(report.summary())
    if report.failed or report.problems:
        print(
            "nothing is lost: the failed scores are recorded; run the push again to send them",
            file=sys.stderr,
        )
        return 1
    return 0
