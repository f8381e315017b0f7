"""Front-door benchmark: a student's login -> a live kit value on screen, spawn included.

One run starts the whole platform (`smartlab up`, as the README does) and walks it in Debian's
Chromium as the journeys do (tests/journeys: the root URL once, then only clicks):

- cold: the student's server is not running (the hub admin stops it through the hub API before
  each run), so the time includes the spawn;
- warm (the baseline, same run): the same clicks while the server is already running.

Each is timed from the click on "Sign in" until the target is on screen; runs alternate cold
and warm; one cold run first (not counted) pays for making the Unix account. The figures to
compare are the medians' ratio, not absolute times. Results go to stdout (with `--markdown
FILE` into the section "## Front door (issue 22)" of that file); progress goes to stderr.

    .venv/bin/python -m bench.front_door [--runs 5] [--target kit|lab] \\
        [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from bench import common
from tests.conftest import wait_until
from tests.e2e.hubclient import Browser
from tests.journeys import steps
from tests.journeys.journey import DESKTOP, Journey
from tests.stack import Up, launch_chromium

TITLE = "Front door (issue 22)"
STUDENT = "anna"
ADMIN = "hugo"
progress = common.progress_printer("front_door")


def to_target(j: Journey, target: str) -> None:
    """The clicks from the login page to the target on screen: the one function to adjust.

    `kit`: sign in, the front door's kit link, a live value on the kit dashboard. `lab`: sign
    in, the front door's JupyterLab link, JupyterLab's launcher."""
    steps.log_in(j, STUDENT)
    steps.at_front_door(j)
    if target == "kit":
        steps.open_kit_dashboard(j)
    else:
        steps.click(j, "jupyterlab", wait=steps.SPAWN_S / 4)
        j.page.get_by_role("tabpanel", name="Launcher").wait_for(timeout=steps.SPAWN_S * 1000)


def timed_walk(browser: Any, hub_url: str, target: str) -> float:
    j = Journey(browser, hub_url + "/", "en", Path(), dict(DESKTOP), record=False).start()
    try:
        j.find(*steps.name("sign_in", "en")).wait_for()
        started = time.perf_counter()
        to_target(j, target)
        return time.perf_counter() - started
    finally:
        j.close()


def stop_server(admin: Browser) -> None:
    """The hub admin stops the student's server through the hub API and waits until it is."""
    answer = admin.request("DELETE", f"/hub/api/users/{STUDENT}/server")
    if answer.status_code not in (202, 204, 400):
        raise RuntimeError(f"stopping {STUDENT}'s server answered {answer.status_code}")

    def stopped() -> bool:
        model = admin.get(f"/hub/api/users/{STUDENT}").json()
        return not model.get("servers") and not model.get("pending")

    wait_until(stopped, timeout=60, interval=0.5)


def run(runs: int, target: str) -> tuple[list[float], list[float]]:
    root = Path(tempfile.mkdtemp(prefix="smartlab-bench-front-door-"))
    root.chmod(0o711)
    progress(f"starting the platform ({root})")
    platform = Up(root / "state", root / "home")
    cold: list[float] = []
    warm: list[float] = []
    try:
        platform.wait_up(timeout=300)
        admin = Browser(platform.hub_url, ADMIN)
        admin.login(f"demo-{ADMIN}")
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            first = timed_walk(browser, platform.hub_url, target)
            progress(f"first cold run (not counted): {first:.1f} s")
            for i in range(runs):
                stop_server(admin)
                cold.append(timed_walk(browser, platform.hub_url, target))
                warm.append(timed_walk(browser, platform.hub_url, target))
                progress(f"run {i + 1}: cold {cold[-1]:.2f} s, warm {warm[-1]:.2f} s")
            browser.close()
    finally:
        progress("stopping the platform")
        platform.stop(signal.SIGTERM)
    return cold, warm


def report(cold: list[float], warm: list[float], runs: int, target: str) -> tuple[str, str]:
    med_cold, med_warm = statistics.median(cold), statistics.median(warm)
    what = {
        "kit": "a live value on the kit dashboard (front door -> kit link)",
        "lab": "JupyterLab's launcher (front door -> JupyterLab link)",
    }[target]
    header = ["", "cold: server not running (spawn included)", "warm: server running", "cold/warm"]
    rows = [
        [f"run {i + 1}", f"{c:.2f} s", f"{w:.2f} s", f"{c / w:.1f}"]
        for i, (c, w) in enumerate(zip(cold, warm, strict=True))
    ]
    rows.append(
        ["**median**", f"{med_cold:.2f} s", f"{med_warm:.2f} s", f"{med_cold / med_warm:.1f}"]
    )
    notes = (
        f'\n\n- Target: {what}; timed in Chromium from the click on "Sign in" until it is on '
        "screen; every run a new browser context (new cookies), clicks only (tests/journeys).\n"
        f"- Student {STUDENT} of the demo site; before each cold run the hub admin stops the "
        "server through the hub API (`DELETE /hub/api/users/<name>/server`) and waits until it "
        "is gone. Warm runs follow each cold run with the server still up. A first cold run, "
        "not counted, makes the Unix account.\n"
        "- As root each server runs under the student's own Unix account with its cgroup "
        "limits; kits, lab service, board and formgraders run meanwhile."
    )
    text = common.text_table([[c.strip("*") for c in r] for r in rows], header)
    md = (
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{common.machine()}, with\n\n    .venv/bin/python -m bench.front_door --runs {runs} "
        f"--target {target} --markdown docs/benchmarks.md\n\n"
        + common.markdown_table(rows, header)
        + notes
    )
    return text, md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--target", choices=["kit", "lab"], default="kit")
    parser.add_argument("--markdown", type=Path, help="write the section into this file")
    args = parser.parse_args()
    cold, warm = run(args.runs, args.target)
    text, md = report(cold, warm, args.runs, args.target)
    print(text)
    if args.markdown:
        common.write_markdown(args.markdown, TITLE, md, progress)


if __name__ == "__main__":
    main()
