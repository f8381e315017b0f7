"""Hub benchmark: N students log in and start their servers at the same moment.

One run starts the whole platform (`smartlab up`, as the README does) with the demo site plus N
generated students of two universities, then measures, through the hub's public URL only:

1. baseline, idle platform: the hub API's latency (`GET /hub/api/users/<me>`, cookie-
   authenticated as a browser does) and one student's login -> server ready time, alone;
2. the storm: N students (threads, one HTTP session each) log in, ask for their server and poll
   the hub API every 0.5 s until it is ready, then open it (OAuth to their own server); the
   time until all are ready, each student's login -> ready time, and the hub API's latency
   under that load (every poll is timed).

As root each server runs under its own Unix account (accounts are made on first spawn; the
first run of the benchmark pays for `useradd`). Results go to stdout (with `--markdown FILE`
into the section "## Hub (issue 4)" of that file); progress goes to stderr.

    .venv/bin/python -m bench.hub [--students 50] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench import common

REPO = Path(__file__).resolve().parent.parent

from site_config.paths import DEMO_SITE  # noqa: E402
from site_config.site import hash_password  # noqa: E402
from tests.e2e.hubclient import Browser  # noqa: E402
from tests.stack import Up  # noqa: E402

TITLE = "Hub (issue 4)"
PASSWORD = "bench-password"
COURSE = "smart-lighting"
progress = common.progress_printer("hub")


@dataclass
class Student:
    name: str
    api_ms: list[float] = field(default_factory=list)
    ready_s: float | None = None
    error: str | None = None


def make_site(path: Path, students: int) -> list[str]:
    """The demo site plus `students` generated students of univ-a and univ-b in COURSE."""
    site = yaml.safe_load(DEMO_SITE.read_text())
    hashed = hash_password(PASSWORD)
    names = [f"st{i:03d}" for i in range(students + 1)]  # st000: the baseline student
    for i, name in enumerate(names):
        site["people"].append(
            {
                "username": name,
                "name": f"Student {i}",
                "roles": ["student"],
                "institution": "univ-a" if i % 2 else "univ-b",
                "password_hash": hashed,
            }
        )
    course = next(c for c in site["courses"] if c["id"] == COURSE)
    course["students"] += names
    path.write_text(yaml.safe_dump(site, allow_unicode=True, sort_keys=False))
    return names


def timed_get(browser: Browser, path: str) -> tuple[float, dict]:
    started = time.perf_counter()
    answer = browser.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    answer.raise_for_status()
    return elapsed, answer.json()


def start_and_wait(
    platform: Up, student: Student, gate: threading.Event | None, t0: list[float]
) -> None:
    browser = Browser(platform.hub_url, student.name)
    if gate is not None:
        gate.wait()
    began = time.perf_counter()
    try:
        browser.login(PASSWORD)
        answer = browser.post(f"/hub/api/users/{student.name}/server")
        if answer.status_code not in (201, 202):
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
    except Exception as err:  # a benchmark reports failures, it does not stop
        student.error = f"{type(err).__name__}: {err}"


def idle_api_latency(platform: Up, name: str, samples: int) -> list[float]:
    browser = Browser(platform.hub_url, name)
    browser.login(PASSWORD)
    return [timed_get(browser, f"/hub/api/users/{name}")[0] for _ in range(samples)]


def run(students: int) -> tuple[str, str]:
    root = Path(tempfile.mkdtemp(prefix="smartlab-bench-hub-"))
    root.chmod(0o711)
    site = root / "site.yaml"
    names = make_site(site, students)
    progress(f"starting the platform with {students + 1} generated students ({root})")
    platform = Up(root / "state", root / "home", "--site", str(site))
    try:
        platform.wait_up(timeout=300)
        progress("baseline: idle hub API latency, one student alone")
        idle = idle_api_latency(platform, names[0], 200)
        alone = Student(names[0])
        start_and_wait(platform, alone, None, [])
        progress(f"one student alone: {alone.error or f'ready after {alone.ready_s:.1f} s'}")

        storm = [Student(name) for name in names[1:]]
        gate, t0 = threading.Event(), [0.0]
        threads = [
            threading.Thread(target=start_and_wait, args=(platform, s, gate, t0)) for s in storm
        ]
        for thread in threads:
            thread.start()
        progress(f"storm: {students} students log in and start their servers now")
        t0[0] = time.perf_counter()
        gate.set()
        while any(t.is_alive() for t in threads):
            done = sum(s.ready_s is not None or s.error is not None for s in storm)
            progress(f"  {done}/{students} ready, {time.perf_counter() - t0[0]:.0f} s")
            time.sleep(5)
    finally:
        progress("stopping the platform")
        platform.stop(signal.SIGTERM)
    return report(students, idle, alone, storm)


def report(
    students: int, idle: list[float], alone: Student, storm: list[Student]
) -> tuple[str, str]:
    ready = [s.ready_s for s in storm if s.ready_s is not None]
    errors = [f"{s.name}: {s.error}" for s in storm if s.error]
    loaded = [ms for s in storm for ms in s.api_ms]
    all_ready = max(ready) if len(ready) == len(storm) else float("nan")
    rows = [
        ["students", "1", str(students), ""],
        [
            "servers ready / errors",
            f"{int(alone.ready_s is not None)} / {int(alone.error is not None)}",
            f"{len(ready)} / {len(errors)}",
            "",
        ],
        [
            "time until all ready",
            f"{alone.ready_s or float('nan'):.1f} s",
            f"{all_ready:.1f} s",
            f"{all_ready / (alone.ready_s or float('nan')):.1f}",
        ],
        [
            "login -> ready, p50",
            f"{alone.ready_s or float('nan'):.1f} s",
            f"{common.percentile(ready, 50):.1f} s",
            "",
        ],
        ["login -> ready, p99", "", f"{common.percentile(ready, 99):.1f} s", ""],
        [
            "hub API p50 (GET /hub/api/users/<me>)",
            f"{common.percentile(idle, 50):.1f} ms",
            f"{common.percentile(loaded, 50):.1f} ms",
            f"{common.percentile(loaded, 50) / common.percentile(idle, 50):.1f}",
        ],
        [
            "hub API p99",
            f"{common.percentile(idle, 99):.1f} ms",
            f"{common.percentile(loaded, 99):.1f} ms",
            f"{common.percentile(loaded, 99) / common.percentile(idle, 99):.1f}",
        ],
        ["hub API requests timed", str(len(idle)), str(len(loaded)), ""],
    ]
    header = ["", "baseline (idle, one student)", f"{students} students at once", "storm/baseline"]
    notes = (
        "\n\n- Each student: its own HTTP session; log in (form POST), "
        "`POST /hub/api/users/<me>/server`, poll `GET /hub/api/users/<me>` every 0.5 s "
        "(each poll timed: the hub API under load), then open the own server's page "
        "(OAuth, JupyterLab). "
        "'time until all ready' counts from the common start to the last student's "
        "server answering through the proxy.\n"
        "- Baseline in the same run, before the storm: 200 sequential API calls of one "
        "logged-in student on the idle platform, and one student's login -> ready alone.\n"
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
    parser.add_argument("--markdown", type=Path, help="write the section into this file")
    args = parser.parse_args()
    text, md = run(args.students)
    print(text)
    if args.markdown:
        common.write_markdown(args.markdown, TITLE, md, progress)


if __name__ == "__main__":
    main()
