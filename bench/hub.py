"""Hub benchmark: N students log in and start their servers at the same moment.

One run starts the whole platform (`smartlab up`, as the README does) with the demo site plus N
generated students of two universities, then measures, through the hub's public URL only:

1. baseline, idle platform: the hub API's latency (`GET /hub/api/users/<me>`, cookie-
   authenticated as a browser does), one student's login -> server ready time, alone, and one
   student's login -> first live kit value on screen (Debian's Chromium through Playwright:
   the front door's kit link, as tests/journeys do; the spawn included);
2. the storm: N students (threads, one HTTP session each) log in, ask for their server and poll
   the hub API every 0.5 s until it is ready, then open it (OAuth to their own server); the
   time until all are ready, each student's login -> ready time, the CPU-seconds each server
   start cost, and the hub API's latency under that load (every poll is timed);
3. the same storm after the class warm-up (hub_config/class_warmup.py): every server is stopped,
   an instructor books a kit for the course, the warm-up starts the servers that fit the
   machine's memory, and once they are ready the N log in again; a warmed student's login ->
   first live kit value too.

CPU-seconds of a start: what the student's server (its cgroup: every process in it) used from
before its start until its page was open: cgroup v2's cpu.stat usage_usec, or on cgroup v1
(no usage in the cpu controller) user + system time of the cgroup's processes and their
reaped children, from /proc.

As root each server runs under its own Unix account (accounts are made on first spawn; the
first run of the benchmark pays for `useradd`). Results go to stdout (with `--markdown FILE`
into the section "## Hub (issue 4)" of that file); progress goes to stderr.

    .venv/bin/python -m bench.hub [--students 50] [--no-warmup] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from bench import common

REPO = Path(__file__).resolve().parent.parent

from hub_config.class_warmup import RECORD_FILE as WARMUP_RECORD  # noqa: E402
from site_config.cgroups import CgroupLimits, members  # noqa: E402
from site_config.paths import DEMO_SITE  # noqa: E402
from site_config.site import hash_password  # noqa: E402
from tests.conftest import wait_until  # noqa: E402
from tests.e2e.hubclient import Browser  # noqa: E402
from tests.stack import Up  # noqa: E402

TITLE = "Hub (issue 4)"
PASSWORD = "bench-password"
COURSE = "smart-lighting"
KIT = "streetlight-1"  # a kit of COURSE (the front door's link "Lenina", tests/journeys)
INSTRUCTOR, HUB_ADMIN = "irina", "hugo"  # the demo site's, password demo-<name>
KIT_STUDENT = "sk000"  # walks to a live kit value; sorts first, so the warm-up warms it
# The lab service books at least an hour ahead: a lead beyond that warms at once (a slot
# "a few minutes ahead" in effect); the idle culler must wait longer than the lead.
WARMUP_MINUTES, IDLE_MINUTES = 80, 120
progress = common.progress_printer("hub")


@dataclass
class Student:
    name: str
    api_ms: list[float] = field(default_factory=list)
    ready_s: float | None = None
    cpu_s: float | None = None
    error: str | None = None


@dataclass
class Storm:
    students: list[Student]
    warmed: int = 0  # servers the warm-up started before the storm
    room: int = 0


def make_site(path: Path, students: int) -> list[str]:
    """The demo site with `students` generated students of univ-a and univ-b as COURSE's (and
    the kit walker KIT_STUDENT); the class warm-up's lead and the idle timeout above it."""
    site = yaml.safe_load(DEMO_SITE.read_text())
    hashed = hash_password(PASSWORD)
    names = [f"st{i:03d}" for i in range(students + 1)]  # st000: the baseline student
    for i, name in enumerate([*names, KIT_STUDENT]):
        site["people"].append(
            {
                "username": name,
                "name": f"Student {i}",
                "roles": ["student"],
                "institution": "univ-a" if i % 2 else "univ-b",
                "password_hash": hashed,
            }
        )
    # Only the generated students take the course: the warm-up's room goes to them.
    course = next(c for c in site["courses"] if c["id"] == COURSE)
    course["students"] = [*names, KIT_STUDENT]
    site["servers"] = {
        **site.get("servers", {}),
        "warmup_minutes": WARMUP_MINUTES,
        "idle_timeout_minutes": IDLE_MINUTES,
    }
    path.write_text(yaml.safe_dump(site, allow_unicode=True, sort_keys=False))
    return names


def cgroup_cpu_s(name: str) -> float:
    """CPU-seconds the user's server cgroup has used (0 if it has none yet)."""
    folders = CgroupLimits(name).folders()
    for folder in folders:  # cgroup v2: the kernel counts it
        stat = folder / "cpu.stat"
        for line in stat.read_text().splitlines() if stat.exists() else []:
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    total = 0  # cgroup v1's cpu controller counts no usage: the member processes do
    for pid in {pid for folder in folders for pid in members(folder)}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def used_since(name: str, before: float) -> float:
    now = cgroup_cpu_s(name)
    return now - before if now >= before else now  # a new cgroup since: all of it


def timed_get(browser: Browser, path: str) -> tuple[float, dict]:
    started = time.perf_counter()
    answer = browser.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    answer.raise_for_status()
    return elapsed, answer.json()


def start_and_wait(
    platform: Up,
    student: Student,
    gate: threading.Event | None,
    t0: list[float],
    cpu_before: float | None = None,
) -> None:
    browser = Browser(platform.hub_url, student.name)
    before = cgroup_cpu_s(student.name) if cpu_before is None else cpu_before
    if gate is not None:
        gate.wait()
    began = time.perf_counter()
    try:
        browser.login(PASSWORD)
        answer = browser.post(f"/hub/api/users/{student.name}/server")
        if answer.status_code not in (201, 202, 400):  # 400: already running (warmed)
            raise RuntimeError(f"spawn request answered {answer.status_code}")
        while True:
            ms, model = timed_get(browser, f"/hub/api/users/{student.name}")
            student.api_ms.append(ms)
            server = model.get("servers", {}).get("")
            if server and server.get("ready"):
                break
            if not server and not model.get("pending"):
                raise RuntimeError("the hub gave up on the server (see its log)")
            if time.perf_counter() - began > 900:
                raise RuntimeError("not ready within 900 s")
            time.sleep(0.5)
        browser.open(f"/user/{student.name}/lab")  # OAuth into the own server, its page
        student.ready_s = time.perf_counter() - (t0[0] if t0 else began)
        student.cpu_s = used_since(student.name, before)
    except Exception as err:  # a benchmark reports failures, it does not stop
        student.error = f"{type(err).__name__}: {err}"


def idle_api_latency(platform: Up, name: str, samples: int) -> list[float]:
    browser = Browser(platform.hub_url, name)
    browser.login(PASSWORD)
    return [timed_get(browser, f"/hub/api/users/{name}")[0] for _ in range(samples)]


def storm(platform: Up, names: list[str], before: dict[str, float] | None = None) -> Storm:
    students = [Student(name) for name in names]
    gate, t0 = threading.Event(), [0.0]
    threads = [
        threading.Thread(
            target=start_and_wait,
            args=(platform, s, gate, t0, (before or {}).get(s.name)),
        )
        for s in students
    ]
    for thread in threads:
        thread.start()
    progress(f"storm: {len(students)} students log in and start their servers now")
    t0[0] = time.perf_counter()
    gate.set()
    while any(t.is_alive() for t in threads):
        done = sum(s.ready_s is not None or s.error is not None for s in students)
        progress(f"  {done}/{len(students)} ready, {time.perf_counter() - t0[0]:.0f} s")
        time.sleep(5)
    return Storm(students)


def kit_walk(hub_url: str, name: str) -> float:
    """Login -> the first live kit value on screen, in Chromium, as a student clicks it."""
    from playwright.sync_api import sync_playwright

    from tests.journeys import steps
    from tests.journeys.journey import DESKTOP, Journey
    from tests.stack import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            j = Journey(browser, hub_url + "/", "en", Path(), dict(DESKTOP), record=False).start()
            try:
                j.find(*steps.name("sign_in", "en")).wait_for()
                started = time.perf_counter()
                steps.log_in(j, name, PASSWORD)
                steps.at_front_door(j)
                steps.open_kit_dashboard(j)
                return time.perf_counter() - started
            finally:
                j.close()
        finally:
            browser.close()


def try_kit_walk(hub_url: str, name: str) -> float | None:
    try:
        return kit_walk(hub_url, name)
    except Exception as err:  # reported as missing, not a stopped benchmark
        progress(f"kit walk of {name} failed: {type(err).__name__}: {err}")
        return None


def stop_all(platform: Up, names: list[str]) -> None:
    """The hub admin stops every listed student's server and waits until all have stopped."""
    admin = Browser(platform.hub_url, HUB_ADMIN)
    admin.login(f"demo-{HUB_ADMIN}")
    for name in names:
        answer = admin.request("DELETE", f"/hub/api/users/{name}/server")
        if answer.status_code not in (202, 204, 400):
            raise RuntimeError(f"stopping {name}'s server answered {answer.status_code}")

    def stopped() -> bool:
        users = admin.get("/hub/api/users?state=active").json()
        return not {u["name"] for u in users} & set(names)

    wait_until(stopped, timeout=300, interval=1)


def book_and_warm(platform: Up, timeout: float = 900) -> dict:
    """The instructor books KIT for COURSE; wait for the warm-up's record and its servers."""
    irina = Browser(platform.hub_url, INSTRUCTOR)
    irina.login(f"demo-{INSTRUCTOR}")
    token = irina.post(f"/hub/api/users/{INSTRUCTOR}/tokens", json={}).json()["token"]
    starts = math.ceil((time.time() + 3660) / 900) * 900  # the lab service's lead and grain
    answer = requests.post(
        platform.lab_url + "/api/bookings",
        headers={"Authorization": f"token {token}"},
        json={"kit": KIT, "course": COURSE, "starts_at": starts, "ends_at": starts + 3600},
        timeout=30,
    )
    if answer.status_code != 201:
        raise RuntimeError(f"booking answered {answer.status_code}: {answer.text[:200]}")
    record = platform.state / WARMUP_RECORD
    wait_until(record.exists, timeout=120, interval=0.5)
    (done,) = json.loads(record.read_text())
    admin = Browser(platform.hub_url, HUB_ADMIN)
    admin.login(f"demo-{HUB_ADMIN}")

    def warmed() -> bool:
        users = admin.get("/hub/api/users?state=ready").json()
        return set(done["started"]) <= {u["name"] for u in users}

    wait_until(warmed, timeout=timeout, interval=2)
    return done


def run(students: int, warmup: bool) -> tuple[str, str]:
    root = Path(tempfile.mkdtemp(prefix="smartlab-bench-hub-"))
    root.chmod(0o711)
    site = root / "site.yaml"
    names = make_site(site, students)
    progress(f"starting the platform with {students + 2} generated students ({root})")
    platform = Up(root / "state", root / "home", "--site", str(site))
    warm: Storm | None = None
    kit_warm: float | None = None
    try:
        platform.wait_up(timeout=300)
        progress("baseline: idle hub API latency, one student alone")
        idle = idle_api_latency(platform, names[0], 200)
        alone = Student(names[0])
        start_and_wait(platform, alone, None, [])
        progress(f"one student alone: {alone.error or f'ready after {alone.ready_s:.1f} s'}")
        kit_cold = try_kit_walk(platform.hub_url, KIT_STUDENT)
        progress(f"one student's login -> live kit value: {kit_cold} s")
        cold = storm(platform, names[1:])
        if warmup:
            progress("warm-up: stopping every server, then booking the course's kit")
            stop_all(platform, [*names, KIT_STUDENT])
            before = {name: cgroup_cpu_s(name) for name in [*names[1:], KIT_STUDENT]}
            t = time.perf_counter()
            done = book_and_warm(platform)
            progress(
                f"warm-up started {len(done['started'])} servers (room for {done['room']}), "
                f"all ready after {time.perf_counter() - t:.0f} s"
            )
            kit_warm = (
                try_kit_walk(platform.hub_url, KIT_STUDENT)
                if KIT_STUDENT in (done["started"])
                else None
            )
            warm = storm(platform, names[1:], before)
            warm.warmed, warm.room = len(set(done["started"]) & set(names[1:])), done["room"]
    finally:
        progress("stopping the platform")
        platform.stop(signal.SIGTERM)
    return report(students, idle, alone, cold, warm, kit_cold, kit_warm)


def fmt(value: float | None, unit: str, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return ""
    return f"{value:.{digits}f} {unit}"


def figures(storm: Storm) -> dict[str, float]:
    ready = [s.ready_s for s in storm.students if s.ready_s is not None]
    cpu = [s.cpu_s for s in storm.students if s.cpu_s is not None]
    loaded = [ms for s in storm.students for ms in s.api_ms]
    return {
        "ready": len(ready),
        "errors": sum(s.error is not None for s in storm.students),
        "all": max(ready) if len(ready) == len(storm.students) else float("nan"),
        "p50": common.percentile(ready, 50),
        "p99": common.percentile(ready, 99),
        "cpu": sum(cpu) / len(cpu) if cpu else float("nan"),
        "api50": common.percentile(loaded, 50),
        "api99": common.percentile(loaded, 99),
        "polls": len(loaded),
    }


def report(
    students: int,
    idle: list[float],
    alone: Student,
    cold: Storm,
    warm: Storm | None,
    kit_cold: float | None,
    kit_warm: float | None,
) -> tuple[str, str]:
    one = alone.ready_s
    columns = [("cold", figures(cold))] + ([("warm", figures(warm))] if warm else [])
    rows = [
        ["students", "1", *[str(students) for _ in columns]],
        [
            "servers warmed before the login (room in memory)",
            "",
            *["" if k == "cold" else f"{warm.warmed} ({warm.room})" for k, _ in columns],
        ],
        [
            "servers ready / errors",
            f"{int(one is not None)} / {int(alone.error is not None)}",
            *[f"{f['ready']} / {f['errors']}" for _, f in columns],
        ],
        ["time until all ready", fmt(one, "s"), *[fmt(f["all"], "s") for _, f in columns]],
        ["login -> ready, p50", fmt(one, "s"), *[fmt(f["p50"], "s") for _, f in columns]],
        ["login -> ready, p99", fmt(one, "s"), *[fmt(f["p99"], "s") for _, f in columns]],
        [
            "CPU-seconds per server start (mean)",
            fmt(alone.cpu_s, "s", 2),
            *[fmt(f["cpu"], "s", 2) for _, f in columns],
        ],
        [
            "hub API p50 (GET /hub/api/users/<me>)",
            fmt(common.percentile(idle, 50), "ms"),
            *[fmt(f["api50"], "ms") for _, f in columns],
        ],
        [
            "hub API p99",
            fmt(common.percentile(idle, 99), "ms"),
            *[fmt(f["api99"], "ms") for _, f in columns],
        ],
        ["hub API requests timed", str(len(idle)), *[str(f["polls"]) for _, f in columns]],
        [
            "one student: login -> first live kit value",
            fmt(kit_cold, "s"),
            *["" if k == "cold" else fmt(kit_warm, "s") for k, _ in columns],
        ],
    ]
    header = [
        "",
        "baseline (idle, one student)",
        f"{students} students at once",
        *([f"{students} at once after the warm-up"] if warm else []),
    ]
    errors = [f"{s.name}: {s.error}" for c in [cold, warm] if c for s in c.students if s.error]
    notes = (
        "\n\n- Each student: its own HTTP session; log in (form POST), "
        "`POST /hub/api/users/<me>/server`, poll `GET /hub/api/users/<me>` every 0.5 s "
        "(each poll timed: the hub API under load), then open the own server's page "
        "(OAuth, JupyterLab). "
        "'time until all ready' counts from the common start to the last student's "
        "server answering through the proxy.\n"
        "- Baseline in the same run, before the storm: 200 sequential API calls of one "
        "logged-in student on the idle platform, and one student's login -> ready alone.\n"
        "- CPU-seconds per server start: the server's cgroup (every process in it) from "
        "before its start until its page was open; after the warm-up that includes the "
        "warm-up's start.\n"
        "- Login -> first live kit value: Debian's Chromium (Playwright), the login page, "
        "the front door's kit link, a live value on the kit dashboard (spawn included when the "
        "server was not running); after the warm-up, a warmed student.\n"
        "- After the warm-up: every server stopped, the instructor books the course's kit, "
        "the class warm-up (`servers.warmup_minutes`, lead beyond the lab service's one-hour "
        "booking lead so that it warms at once) starts the servers that fit "
        "(MemAvailable - 2 GiB) / `servers.mem_limit`, by name; once they are ready the "
        "same students log in again.\n"
        "- Servers: JupyterLab (`jupyterhub-singleuser`) under each student's own Unix "
        "account when run as root; kits, lab service and formgraders run meanwhile."
    )
    if errors:
        notes += "\n- Errors: " + "; ".join(errors[:5])
    text = common.text_table(rows, header)
    md = (
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{common.machine()}, with\n\n    .venv/bin/python -m bench.hub --students {students}"
        " --markdown docs/benchmarks.md\n\n" + common.markdown_table(rows, header) + notes
    )
    return text, md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=50)
    parser.add_argument("--no-warmup", action="store_true", help="skip the run after a warm-up")
    parser.add_argument("--markdown", type=Path, help="write the section into this file")
    args = parser.parse_args()
    text, md = run(args.students, warmup=not args.no_warmup)
    print(text)
    if args.markdown:
        common.write_markdown(args.markdown, TITLE, md, progress)


if __name__ == "__main__":
    main()
