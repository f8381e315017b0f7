"""Dashboard benchmark, measured in a real browser: time from opening a kit dashboard to its
first live value (cold kernel and preheated kernel), and the delay from a twin's publish to the
value on screen with many dashboards open at once.

One run starts its own Mosquitto (dynamic security, a free port, a temporary state folder), the
lab service (`python -m lab_service.app`, what `smartlab lab serve` runs), three twins
in this process (the measured street-lighting kit at `--rate` Hz, an environment station and a
parking lot at their models' rates, so every dashboard also receives other kits' traffic), two
standalone Voilà servers for one viewer (one without preheating, one with a pool of preheated
kit.ipynb kernels) and Debian's Chromium (headless, through Playwright; background-tab throttling
off, as each person's tab would be in front).

1. first value: open `kit.ipynb?kit=<kit>` in a new tab; in the page, from the navigation's
   start to the frame that shows a value (the `data-ts` of the lamp-power stamp, laid out):
   first in the page's server-rendered first paint, then in the live widgets that replace
   it; the tab is then closed (its kernel shuts down). Baseline, same run: a bare MQTT subscriber
   (`labs.client.connect` with the viewer's watch account) from connect to its first sample.
2. delay: `--dashboards` pages open at once; in each, a MutationObserver records, at the next
   animation frame after a new sample's stamp appears, `Date.now() - ts` (the kit's publish
   time; same machine clock). Baseline, same run and same samples: as many bare paho subscribers
   in this process, receive time - ts. First with one dashboard open, then with all of them.

Results go to stdout (with `--markdown FILE` into the section "## Dashboards (issue 5)");
progress to stderr; the exit status is 0 whatever the figures.

    .venv/bin/python -m bench.dashboards [--quick] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

from bench import common  # noqa: E402
from hardware_kits.broker import Broker  # noqa: E402
from hardware_kits.descriptor import load_models  # noqa: E402
from hardware_kits.kit_runner import KitRunner  # noqa: E402
from hardware_kits.twins.base import twin_class  # noqa: E402
from labs.client import connect  # noqa: E402
from site_config.runtime import free_port  # noqa: E402
from tests.stack import (  # noqa: E402
    ServiceProcess,
    VoilaServer,
    launch_chromium,
    token,
    with_tokens,
)

TITLE = "Dashboards (issue 5)"
KIT, MODEL = "bench-lamp-1", "street-lighting"
OTHERS = {"bench-env-1": "environment-station", "bench-park-1": "smart-parking"}
SENSOR = "lamp-power"
USERS = {
    "admin": {"name": "bench-admin", "institution": "centre", "lab_admin": True},
    "viewer": {"name": "bench-viewer", "institution": "univ-a"},
}
TARGET_COLD_S, TARGET_WARM_S, TARGET_P99_MS = 3.0, 1.0, 250.0
STAMP = f".smartlab-readings [data-sensor='{SENSOR}'] .smartlab-ts[data-ts]"  # live
FIRST_PAINT = f".smartlab-snapshot [data-sensor='{SENSOR}'] .smartlab-ts[data-ts]"

# In every tab of phase 1: when a value is first on screen, at the next animation frame after
# it is laid out, in ms since the navigation started. Measured in the page because Playwright's
# own checks wait behind the page's script work: they saw the first paint 0.3-0.8 s late.
FIRST_SEEN_JS = f"""
window.__firstSeen = {{}};
new MutationObserver(() => {{
  const seen = window.__firstSeen;
  for (const [kind, selector] of [['paint', "{FIRST_PAINT}, {STAMP}"], ['live', "{STAMP}"]]) {{
    const el = document.querySelector(selector);
    if (!(kind in seen) && el && el.getClientRects().length) {{
      seen[kind] = null;
      requestAnimationFrame(() => {{ seen[kind] = performance.now(); }});
    }}
  }}
}}).observe(document, {{subtree: true, childList: true}});
"""

OBSERVE_JS = """(sensor) => {
  window.__delays = [];
  const box = document.querySelector('.smartlab-readings');
  const stamp = () => parseFloat(
    box.querySelector(`[data-sensor='${sensor}'] .smartlab-ts[data-ts]`)?.dataset.ts ?? 0);
  // The stamp already shown is not new: a row re-sent for another sensor's value must not
  // record its age.
  let last = stamp();
  new MutationObserver(() => {
    const ts = stamp();
    if (!ts) return;
    if (ts === last) return;
    last = ts;
    requestAnimationFrame(() => window.__delays.push(Date.now() - ts * 1000));
  }).observe(box, {subtree: true, childList: true, characterData: true, attributes: true});
}"""

progress = common.progress_printer("dashboards")


# ---------------------------------------------------------------- the platform


class Stack:
    def __init__(self, root: Path, rate: float, pool: int) -> None:
        self.root = root
        self.rate = rate
        self.pool = pool
        self.broker = Broker(root / "broker", port=free_port())
        self.service: ServiceProcess | None = None
        self.runners: list[KitRunner] = []
        self.cold: VoilaServer | None = None
        self.warm: VoilaServer | None = None

    def start(self) -> None:
        self.broker.start()
        self.service = ServiceProcess(
            self.broker, self.root, with_tokens(USERS), name="dash-lab"
        ).start()
        admin = self.service.client(token("admin"))
        models = load_models()
        for kit_id, model in {KIT: MODEL, **OTHERS}.items():
            admin.register_kit(kit_id, model)
            self.runners.append(
                KitRunner(
                    kit_id,
                    twin_class(model)(models[model], seed=7),
                    self.broker.address(f"kit-{kit_id}"),
                    rate_hz=self.rate if kit_id == KIT else None,
                ).start()
            )
        env = {"SMARTLAB_LAB_URL": self.service.url, "SMARTLAB_TOKEN": token("viewer")}
        self.cold = VoilaServer("cold", self.root, env).start()
        self.warm = VoilaServer("warm", self.root, env, preheat={"kit.ipynb": self.pool}).start()

    def watch_url(self) -> str:
        assert self.service is not None
        return self.service.client(token("viewer")).mqtt_urls()["watch"]

    def stop(self) -> None:
        for server in (self.cold, self.warm):
            if server is not None:
                server.stop()
        if self.service is not None:
            self.service.stop()
        for runner in self.runners:
            runner.stop()
        self.broker.stop()


# ---------------------------------------------------------------- 1. first value


def first_value_page(context: Any, url: str) -> tuple[float, float]:
    """Seconds from opening `url` in a new tab of `context` (the navigation's start) to the
    first value on screen (the page's first paint, or the live widgets if they come first),
    and to the first value in the live widgets. The context runs FIRST_SEEN_JS."""
    page = context.new_page()
    try:
        page.goto(url, wait_until="commit")
        page.wait_for_function(
            "() => window.__firstSeen && window.__firstSeen.live", timeout=90_000, polling=100
        )
        seen = page.evaluate("window.__firstSeen")
        return seen["paint"] / 1000, seen["live"] / 1000
    finally:
        page.close(run_before_unload=True)  # its kernel shuts down


def first_value_mqtt(url: str) -> float:
    got = threading.Event()
    start = time.perf_counter()
    lab = connect(url, client_id=f"bench-first-{time.monotonic_ns()}")
    try:
        kit = lab.kit(KIT, timeout=10)
        kit.subscribe(lambda _k, _body: got.set())
        if kit.received:
            got.set()
        if not got.wait(10):
            raise RuntimeError("no telemetry within 10 s")
        return time.perf_counter() - start
    finally:
        lab.close()


def wait_refilled(server: VoilaServer, fills: int) -> int:
    """Wait until the preheated pool has refilled after a visitor took a kernel."""
    deadline = time.monotonic() + 120
    while server.pool_fills("kit.ipynb") <= fills and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # let the new kernel's start-up CPU die down before the next measurement
    return server.pool_fills("kit.ipynb")


def wait_closed(server: VoilaServer) -> None:
    """Wait until the kernel of the tab just closed has ended (its shutdown takes CPU that the
    next measurement would otherwise share)."""
    deadline = time.monotonic() + 30
    while server.kernel_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)


def first_value_phase(stack: Stack, browser: Any, runs: int) -> dict[str, list[float]]:
    assert stack.cold is not None and stack.warm is not None
    url_cold = stack.cold.page("kit.ipynb", kit=KIT)
    url_warm = stack.warm.page("kit.ipynb", kit=KIT)
    results: dict[str, list[float]] = {
        kind: []
        for kind in ("mqtt", "cold", "cold live", "warm", "warm live", "fresh", "fresh live")
    }

    def opened(kind: str, context: Any, url: str) -> None:
        first, live = first_value_page(context, url)
        results[kind].append(first)
        results[f"{kind} live"].append(live)

    # One browser context for the person who has used the platform before (static files
    # cached); a new context each time for a first visit (empty cache).
    cached = browser.new_context(viewport={"width": 1280, "height": 1000})
    cached.add_init_script(FIRST_SEEN_JS)
    first_value_page(cached, url_cold)
    fills = wait_refilled(stack.warm, 0)
    try:
        for i in range(runs):
            results["mqtt"].append(first_value_mqtt(stack.watch_url()))
            opened("cold", cached, url_cold)
            wait_closed(stack.cold)
            opened("warm", cached, url_warm)
            fills = wait_refilled(stack.warm, fills)
            fresh = browser.new_context(viewport={"width": 1280, "height": 1000})
            fresh.add_init_script(FIRST_SEEN_JS)
            try:
                opened("fresh", fresh, url_warm)
            finally:
                fresh.close()
            fills = wait_refilled(stack.warm, fills)
            progress(
                f"first value, run {i + 1}/{runs}: mqtt {results['mqtt'][-1]:.3f} s, "
                + ", ".join(
                    f"{label} {results[kind][-1]:.2f} s (live {results[kind + ' live'][-1]:.2f} s)"
                    for kind, label in (
                        ("cold", "cold"),
                        ("warm", "preheated"),
                        ("fresh", "preheated + empty cache"),
                    )
                )
            )
    finally:
        cached.close()
    return results


# ---------------------------------------------------------------- 2. delay with many pages


class Subscribers:
    """Bare paho subscribers (the baseline): receive time - ts of the measured kit."""

    def __init__(self, url: str, n: int) -> None:
        self.delays: list[float] = []
        self.recording = False
        self._lock = threading.Lock()
        self.labs = [
            connect(url, client_id=f"bench-sub-{i}-{time.monotonic_ns()}", history=0)
            for i in range(n)
        ]
        for lab in self.labs:
            lab.kit(KIT, timeout=10).subscribe(self._sample)

    def _sample(self, _kit: str, body: dict[str, Any]) -> None:
        if self.recording:
            delay = (time.time() - body["ts"]) * 1000
            with self._lock:
                self.delays.append(delay)

    def take(self) -> list[float]:
        with self._lock:
            out, self.delays = self.delays, []
        return out

    def close(self) -> None:
        for lab in self.labs:
            lab.close()


def open_dashboard(browser: Any, url: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(240_000)
    page.goto(url)
    page.wait_for_selector(STAMP)
    page.evaluate(OBSERVE_JS, SENSOR)
    return page


def process_groups(stack: Stack) -> dict[str, list[int]]:
    """Our processes by role, for CPU accounting (threads and children included)."""
    import psutil

    def tree(pid: int) -> list[int]:
        try:
            root = psutil.Process(pid)
            return [root.pid, *(c.pid for c in root.children(recursive=True))]
        except psutil.Error:
            return []

    me = psutil.Process()
    chromium = [p.pid for p in me.children(recursive=True) if "chrom" in (p.name() or "").lower()]
    assert stack.cold is not None and stack.cold.process is not None
    server = stack.cold.process.pid
    kernels = sorted(stack.cold.kernel_pids())
    assert stack.broker.process is not None and stack.service is not None
    return {
        "chromium": chromium,
        "kernels": kernels,
        "voila": [server],
        "broker": [stack.broker.process.pid],
        "service": tree(stack.service.process.pid) if stack.service.process else [],
        "twins+subscribers": [me.pid],
    }


def measure(
    pages: list[Any], subs: Subscribers, seconds: float, stack: Stack
) -> tuple[list[float], list[float], dict[str, float]]:
    for page in pages:
        page.evaluate("() => { window.__delays = []; }")
    subs.take()
    meter = common.CpuMeter(process_groups(stack))
    subs.recording = True
    time.sleep(seconds)
    subs.recording = False
    cpu = meter.stop()
    screen = [d for page in pages for d in page.evaluate("() => window.__delays")]
    return screen, subs.take(), cpu


def delay_phase(
    stack: Stack, browser: Any, dashboards: int, seconds: float
) -> dict[str, tuple[list[float], list[float], dict[str, float]]]:
    assert stack.cold is not None
    url = stack.cold.page("kit.ipynb", kit=KIT)
    results = {}
    subs = Subscribers(stack.watch_url(), dashboards)
    pages: list[Any] = []
    try:
        pages.append(open_dashboard(browser, url))
        progress(f"delay: 1 dashboard open, measuring {seconds / 2:g} s")
        results["1"] = measure(pages, subs, seconds / 2, stack)
        for i in range(1, dashboards):
            try:
                pages.append(open_dashboard(browser, url))
            except Exception as err:  # the machine is too busy: measure what opened
                progress(f"delay: dashboard {i + 1} did not show a value: {err}"[:300])
                continue
            progress(f"delay: {len(pages)}/{dashboards} dashboards open")
        time.sleep(3)  # let the last pages settle
        progress(f"delay: {dashboards} dashboards open, measuring {seconds:g} s")
        results[str(len(pages))] = measure(pages, subs, seconds, stack)
    finally:
        for page in pages:
            with contextlib.suppress(Exception):
                page.context.close()
        subs.close()
    return results


# ---------------------------------------------------------------- report


def report(
    first: dict[str, list[float]],
    delays: dict[str, tuple[list[float], list[float], dict[str, float]]],
    args: argparse.Namespace,
    command: str,
    started: datetime,
) -> str:
    med = {k: statistics.median(v) for k, v in first.items()}
    rows1 = [
        [
            "bare MQTT subscriber (baseline)",
            f"{med['mqtt']:.3f} s",
            f"{max(first['mqtt']):.3f} s",
            "1.0",
            "",
            "",
            "",
        ]
    ]
    for kind, label in (
        ("cold", "dashboard, cold kernel"),
        ("warm", "dashboard, preheated kernel"),
        ("fresh", "dashboard, preheated kernel, empty browser cache"),
    ):
        live = f"{kind} live"
        rows1.append(
            [
                label,
                f"{med[kind]:.2f} s",
                f"{max(first[kind]):.2f} s",
                f"{med[kind] / med['mqtt']:.0f}",
                f"{med[live]:.2f} s",
                f"{max(first[live]):.2f} s",
                f"{med[live] / med['mqtt']:.0f}",
            ]
        )
    header1 = [
        "opening -> first live value on screen",
        "median",
        "max",
        "x baseline",
        "in the live widgets: median",
        "max",
        "x baseline",
    ]
    rows2 = []
    many = list(delays)[-1]
    for n, (screen, base, _cpu) in delays.items():
        rows2.append(
            [
                f"{n} dashboard{'s' if n != '1' else ''} open",
                f"{common.percentile(screen, 50):.0f} ms",
                f"{common.percentile(screen, 99):.0f} ms",
                f"{max(screen):.0f} ms" if screen else "-",
                str(len(screen)),
                f"{common.percentile(base, 50):.1f} ms",
                f"{common.percentile(base, 99):.1f} ms",
                str(len(base)),
            ]
        )
    header2 = [
        "twin publish -> value on screen",
        "p50",
        "p99",
        "max",
        "samples",
        "bare subscribers p50",
        "p99",
        "samples",
    ]
    groups = list(next(iter(delays.values()))[2])
    rows3 = [
        [f"{n} open", *(f"{cpu[g]:.0f}" for g in groups)] for n, (_s, _b, cpu) in delays.items()
    ]
    header3 = ["CPU, % of one core", *groups]
    screen_many = delays[many][0]
    checks = [
        (med["cold"] <= TARGET_COLD_S, f"first value, cold, median ≤ {TARGET_COLD_S:g} s"),
        (med["warm"] <= TARGET_WARM_S, f"first value, preheated, median ≤ {TARGET_WARM_S:g} s"),
        (
            int(many) == args.dashboards,
            f"{args.dashboards} dashboards open at once (opened: {many})",
        ),
        (
            common.percentile(screen_many, 99) <= TARGET_P99_MS,
            f"p99 publish -> screen ≤ {TARGET_P99_MS:g} ms with {many} dashboards",
        ),
    ]
    lines = [
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {common.machine()}, with",
        "",
        f"    {command}",
        "",
        common.markdown_table(rows1, header1),
        "",
        common.markdown_table(rows2, header2),
        "",
        common.markdown_table(rows3, header3),
        "",
    ]
    lines += [f"- **{'PASS' if ok else 'FAIL'}** {text}" for ok, text in checks]
    lines += [
        "",
        f"- {args.runs} openings per kind, each in a new tab; the clock runs, in the "
        "page, from the navigation's start to the animation frame after the first value "
        "is laid out (the `data-ts` stamp of the "
        f"{SENSOR} value, the kit at {args.rate:g} Hz): visible in the page's "
        "server-rendered first paint, or in the live widgets (right-hand columns), "
        "which replace it. A cold kernel connects after the request and waits up to "
        "1 s for a sample to paint; a preheated one has the latest sample already. "
        "The tab is then closed and its kernel shuts down. "
        "Tabs share one browser context (Voilà's "
        "and bqplot's static files cached, as for anyone who used the platform before) "
        "except on the 'empty browser cache' row (a new context each time). The "
        f"preheated server keeps {args.pool} kit.ipynb kernels ready (imported, "
        "connected, the viewer's history filling); each measurement waits for the pool "
        "to refill.",
        f"- Delay: {args.dashboards} dashboards in one headless Chromium "
        "(background throttling off), one cold Voilà kernel each, all showing the same "
        "kit; a MutationObserver per page records `Date.now() - ts` at the next animation "
        "frame after a new sample's stamp appears; the bare subscribers (as many, paho v5 "
        "in the benchmark process) see the same samples. Values may be flushed 10 times a "
        "second, above the kit's rate; the row of latest values changes (and is "
        f"measured, for {SENSOR}) when its text does (a new value, or the next second: "
        "about 1 sample in 2 at 2 Hz); lines are redrawn once a second (the 1-minute "
        "window), and each page's time axes step every 7.5 s at a moment of their own.",
        "- The machine is shared and has 2 cores: the kernels, Voilà, the broker and "
        "Chromium rendering every page compete for them. The 'chromium' CPU column is "
        "the viewers' side, which in a class runs on each student's own computer; "
        "'others' is load from outside this benchmark. Compare ratios to the baseline.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and pages (smoke)")
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="FILE",
        help="write the results into this file's dashboards section",
    )
    parser.add_argument("--runs", type=int, default=None, help="openings per kind (default 5)")
    parser.add_argument("--pool", type=int, default=2, help="preheated kernels (default 2)")
    parser.add_argument("--dashboards", type=int, default=None, help="pages open (default 20)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="delay measurement with all pages open (default 30)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="measured kit's telemetry, Hz (default: its model's, 2 Hz)",
    )
    args = parser.parse_args(argv)
    args.runs = args.runs or (2 if args.quick else 5)
    args.dashboards = args.dashboards or (4 if args.quick else 20)
    args.seconds = args.seconds or (8.0 if args.quick else 30.0)
    args.rate = args.rate or load_models()[MODEL]["sensors"][SENSOR]["rate_hz"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(
        [".venv/bin/python", "bench/dashboards.py", *(sys.argv[1:] if argv is None else argv)]
    )
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="smartlab-bench-dashboards-"))
    root.chmod(0o711)  # the broker drops to the `mosquitto` account; it must reach its folder
    started = datetime.now(UTC)
    stack = Stack(root, args.rate, args.pool)
    try:
        progress("starting broker, lab service, 3 twins and 2 Voilà servers")
        stack.start()
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright, unthrottled=True)
            try:
                progress(f"phase 1: first value, {args.runs} openings each")
                first = first_value_phase(stack, browser, args.runs)
                progress(f"phase 2: delay with up to {args.dashboards} dashboards")
                delays = delay_phase(stack, browser, args.dashboards, args.seconds)
            finally:
                browser.close()
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    except Exception:
        for server in (stack.cold, stack.warm):
            if server is not None:
                progress(f"failed; the log of Voilà ({server.name}) ends with:\n{server.output()}")
        raise
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    body = report(first, delays, args, command, started)
    print(body)
    if args.markdown:
        common.write_markdown(args.markdown, TITLE, body, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
