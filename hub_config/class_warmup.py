"""Warm a class before its booked slot: start the course's students' servers a few minutes
ahead, as Zero to JupyterHub's user placeholders warm a node before a class.

The hub-managed service `class-warmup` (hub_config/hub.py) looks every `--every` seconds at
the lab service's coming bookings. For a slot that begins within `--lead-minutes` (the site
file's `servers.warmup_minutes`), it starts, once per booking, the servers of the course's
students (hub group nbgrader-<course>) through the hub's REST API: the same call, spawner,
account, limits and environment as a student's own login; the spawner gives the server the
student's usual language (hub_config/lab_profile.py). It starts:

- only as many as fit the machine's memory: (MemAvailable - reserve) // the site's
  `servers.mem_limit`, decided once per booking;
- in a stable order (by name), so a repeated decision picks the same students;
- never a server that is running or starting (the hub answers 400 to a second start anyway).

The site file keeps `warmup_minutes` below `idle_timeout_minutes` (site_config/site.py), so
the idle culler cannot stop a warmed server before its slot begins.

Bookings are read from the lab service's own database, read-only, through its table definition
(lab_service/store.py): the lab service's REST API answers people only (a hub service token is
refused), and a read-only query of one table needs no new right in the lab service. Each
warm-up is logged and recorded in `--record` (JSON, root's, 0600), which the front door shows
to the course's instructors (labs/home).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jupyterhub.traitlets import ByteSpecification
from sqlalchemy import create_engine, select
from traitlets import TraitError

from lab_service.store import BookingRow
from site_config.paths import LAB_DB_URL_ENV

SERVICE = "class-warmup"
RECORD_FILE = "class-warmups.json"  # in the state folder
STUDENTS_PREFIX = "nbgrader-"  # a course's students (hub_config.hub.user_groups)
DEFAULT_RESERVE = "2G"  # memory left to the hub, the services, the kits and the grader
KEEP_RECORDS = 50  # the latest warm-ups kept in the record

log = logging.getLogger(SERVICE)


@dataclass(frozen=True)
class Booking:
    id: int
    course: str
    kit: str
    starts_at: float
    ends_at: float


@dataclass
class Warmup:
    """What one booking's warm-up did: the front door's line and the log's."""

    booking: int
    course: str
    kit: str
    starts_at: float
    at: float
    room: int  # servers that fit the memory
    started: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)  # already running or starting: left
    left_out: list[str] = field(default_factory=list)  # no room for them
    failed: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ the choice (pure)


def size_bytes(text: str) -> int:
    """'2G' -> bytes, read as JupyterHub reads the spawner's mem_limit (1024-based)."""
    try:
        value = int(text) if text.strip().isdigit() else text.strip()  # bytes, or 2G
        return int(ByteSpecification().validate(None, value))
    except TraitError:
        raise ValueError(f"not a size: {text!r} (e.g. 512M, 2G)") from None


def due(bookings: Iterable[Booking], now: float, lead_s: float) -> list[Booking]:
    """Bookings whose slot begins within `lead_s` and has not begun yet, soonest first."""
    return sorted(
        (b for b in bookings if b.starts_at - lead_s <= now < b.starts_at),
        key=lambda b: (b.starts_at, b.id),
    )


def room(available: int, reserve: int, mem_limit: int) -> int:
    """How many more servers of `mem_limit` bytes fit in `available`, keeping `reserve`."""
    if mem_limit <= 0:  # no limit: nothing to count by; warm none rather than guess
        return 0
    return max(0, (available - reserve) // mem_limit)


def choose(students: Iterable[str], running: set[str], fits: int) -> tuple[list[str], list[str]]:
    """(to start, left out): students without a server, by name, the first `fits` of them."""
    waiting = sorted(set(students) - running)
    return waiting[:fits], waiting[fits:]


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no MemAvailable in {meminfo}")


# ------------------------------------------------------------------ bookings and the hub


def read_only_url(db_url: str) -> str:
    """A SQLite URL opened read-only (the lab service alone writes its database)."""
    if db_url.startswith("sqlite:///"):
        path = db_url.removeprefix("sqlite:///")
        return f"sqlite:///file:{urllib.parse.quote(path)}?mode=ro&uri=true"
    return db_url


def coming_bookings(db_url: str, now: float, lead_s: float) -> list[Booking]:
    if db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).exists():
        return []  # the lab service has not made it yet
    engine = create_engine(read_only_url(db_url))
    try:
        with engine.connect() as db:
            rows = db.execute(
                select(
                    BookingRow.id,
                    BookingRow.course,
                    BookingRow.kit_id,
                    BookingRow.starts_at,
                    BookingRow.ends_at,
                ).where(
                    ~BookingRow.cancelled,
                    BookingRow.starts_at > now,
                    BookingRow.starts_at <= now + lead_s,
                )
            )
            return [Booking(*row) for row in rows]
    finally:
        engine.dispose()


class Hub:
    """The hub's REST API with this service's token (its role: hub_config.hub.load_roles)."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url, self.token = api_url.rstrip("/"), token

    def _call(self, method: str, path: str) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.api_url + path,
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"{}" if method == "POST" else None,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                body = answer.read()
                return answer.status, json.loads(body) if body else {}
        except urllib.error.HTTPError as err:
            return err.code, {}

    def students(self, course: str) -> list[str]:
        status, group = self._call("GET", f"/groups/{urllib.parse.quote(STUDENTS_PREFIX + course)}")
        return list(group.get("users") or []) if status == 200 else []

    def has_server(self, name: str) -> bool:
        """Running or starting (or stopping): never started again."""
        status, model = self._call("GET", f"/users/{urllib.parse.quote(name)}")
        if status == 404:  # gone since the group was read: its start fails and is recorded
            return False
        if status != 200:
            raise RuntimeError(f"the hub answered {status} about {name}")
        return bool(model.get("servers", {}).get("") or model.get("pending"))

    def start(self, name: str) -> bool:
        status, _ = self._call("POST", f"/users/{urllib.parse.quote(name)}/server")
        return status in (201, 202)


# ------------------------------------------------------------------ one warm-up


def warm(booking: Booking, hub: Hub, available: int, reserve: int, mem_limit: int) -> Warmup:
    students = hub.students(booking.course)
    running = {s for s in students if hub.has_server(s)}
    fits = room(available, reserve, mem_limit)
    start, left_out = choose(students, running, fits)
    done = Warmup(
        booking.id,
        booking.course,
        booking.kit,
        booking.starts_at,
        time.time(),
        fits,
        running=sorted(running),
        left_out=left_out,
    )
    for name in start:
        (done.started if hub.start(name) else done.failed).append(name)
    log.info(
        "booking %s (%s, %s at %s): started %d server(s) %s; %d already running; "
        "%d left out (room for %d); %d failed %s",
        booking.id,
        booking.course,
        booking.kit,
        time.strftime("%Y-%m-%d %H:%M", time.localtime(booking.starts_at)),
        len(done.started),
        done.started,
        len(done.running),
        len(done.left_out),
        fits,
        len(done.failed),
        done.failed,
    )
    return done


def load_record(path: Path) -> list[dict]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    with os.fdopen(fd) as f:
        try:
            found = json.load(f)
        except ValueError:
            return []
    return found if isinstance(found, list) else []


def save_record(path: Path, record: list[dict]) -> None:
    staged = path.with_name(path.name + ".new")
    staged.unlink(missing_ok=True)
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(record[-KEEP_RECORDS:], out)
    os.replace(staged, path)


def run_once(args: argparse.Namespace, hub: Hub, now: float) -> list[Warmup]:
    lead = args.lead_minutes * 60
    record = load_record(args.record)
    warmed = {r.get("booking") for r in record}
    done = []
    for booking in due(coming_bookings(args.lab_db, now, lead), now, lead):
        if booking.id in warmed:
            continue
        result = warm(booking, hub, available_memory(), args.reserve, args.mem_limit)
        record.append(asdict(result))
        save_record(args.record, record)
        done.append(result)
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=SERVICE, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lab-db",
        default=os.environ.get(LAB_DB_URL_ENV, ""),
        # From the environment by default: a URL may carry a password, and every account can
        # read a process's command line.
        help=f"the lab service's database URL (default: ${LAB_DB_URL_ENV})",
    )
    parser.add_argument("--lead-minutes", type=float, default=10.0)
    parser.add_argument("--mem-limit", type=size_bytes, required=True, help="per server, e.g. 2G")
    parser.add_argument("--reserve", type=size_bytes, default=size_bytes(DEFAULT_RESERVE))
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between looks")
    args = parser.parse_args(argv)
    if not args.lab_db:
        parser.error(f"no database: give --lab-db or set ${LAB_DB_URL_ENV}")
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="[%(levelname).1s %(asctime)s class-warmup] %(message)s",
    )
    hub = Hub(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
    log.info(
        "warming each booked course %.0f min ahead, %s bytes a server, reserve %s bytes",
        args.lead_minutes,
        args.mem_limit,
        args.reserve,
    )
    while True:
        try:
            run_once(args, hub, time.time())
        except Exception:  # the database or the hub is briefly away: look again later
            log.exception("warm-up round failed")
        time.sleep(args.every)


if __name__ == "__main__":
    main()
