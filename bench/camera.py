"""Kit picture benchmark: kit-to-viewer delay of camera frames beside the telemetry's, the
broker's CPU, and the bandwidth a viewer costs for the full picture and for a thumbnail.

One run starts its own Mosquitto (dynamic security, as `smartlab` configures it) and one
street-lighting twin (`KitRunner` in a child process: telemetry at the model's rate, its
synthetic camera at 10 frames/s full and 1 frame/s thumbnail). Viewers are what a dashboard
kernel holds, in `--procs` child processes: per viewer a lab connection (`labs.client.Lab`, the
kit's telemetry) and a frame feed (`labs.widgets.kit_picture.FrameFeed`, the page's own camera
connection, with its checks). Delay = receive wall time - the kit's stamp (`ts` of the
telemetry, the frame's `ts` property, taken before the frame is drawn and encoded): the viewer's
MQTT client, i.e. up to the kernel, not the browser's paint.

Phases, each a `--seconds` window after a warm-up: no viewers (the broker's own CPU), `--viewers`
viewers of the full stream, the same number of thumbnail viewers. Results go to stdout (and
with `--markdown FILE` into a section of that file); progress to stderr; exit status 0 whatever
the figures.

    .venv/bin/python -m bench.camera [--quick] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from bench import common
from hardware_kits import protocol as P
from hardware_kits.broker import Broker
from hardware_kits.mqtt import BrokerAddress, Credentials
from site_config.runtime import free_port

TITLE = "Kit picture"
KIT = "bench-cam-lamp"
MODEL = "street-lighting"
P99_TARGET_MS = 300.0

progress = common.progress_printer("camera")

# In each Chromium page: kit stamp -> on screen, each time the caption under the picture shows
# a new frame (its image goes in the same flush, just before it).
SCREEN_JS = """
window.__delays = [];
new MutationObserver(() => {
  const el = document.querySelector('.smartlab-picture-frame[data-ts]');
  if (!el) return;
  const ts = +el.dataset.ts;
  if (ts !== window.__last) { window.__last = ts; window.__delays.push(Date.now() - ts); }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


class BrowserPages:
    """`count` kit pages in headless Chromium (Debian's, as the browser tests drive it), served
    by a standalone Voilà with the viewer's broker account (no lab service: no session panel)."""

    def __init__(self, root: Path, mqtt_url: str, count: int) -> None:
        from playwright.sync_api import sync_playwright

        from tests.stack import VoilaServer, launch_chromium

        self.voila = VoilaServer("bench-camera", root, {"SMARTLAB_MQTT_URL": mqtt_url}).start()
        self._playwright = sync_playwright().start()
        self.browser = launch_chromium(self._playwright, unthrottled=True)
        self.pages = []
        for _ in range(count):
            page = self.browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.add_init_script(SCREEN_JS)
            page.set_default_timeout(60_000)
            page.goto(self.voila.page("kit.ipynb", kit=KIT))
            page.wait_for_selector(".smartlab-picture-frame[data-ts]", state="attached")
            self.pages.append(page)

    def reset(self) -> None:
        for page in self.pages:
            page.evaluate("window.__delays = []")

    def delays(self) -> list[float]:
        return [d for page in self.pages for d in page.evaluate("window.__delays")]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.browser.close()
            self._playwright.stop()
        self.voila.stop()


# ============================================================== viewers (child process)


def viewer_worker(
    conn: Connection, host: str, port: int, creds: dict[str, str], stream: str, count: int
) -> None:
    """`count` viewers of KIT's `stream` and telemetry. Sends ("ready", pid); then "start"
    clears the records, "stop" answers ("result", {...}) and ends."""
    from labs.client.mqtt_kits import Lab
    from labs.widgets.kit_picture import Frame, FrameFeed

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    address = BrokerAddress(host, port, Credentials(**creds))
    lock = threading.Lock()
    rec: dict[str, Any] = {"frames": [], "telemetry": [], "bytes": [0] * count, "n": [0] * count}
    labs, feeds = [], []

    def on_frame(i: int, frame: Frame) -> None:
        now = time.time()
        with lock:
            rec["frames"].append((now - frame.ts) * 1000)
            rec["bytes"][i] += len(frame.jpeg)
            rec["n"][i] += 1

    def on_sample(_kit: str, body: dict[str, Any]) -> None:
        now = time.time()
        with lock:
            rec["telemetry"].append((now - body["ts"]) * 1000)

    try:
        for i in range(count):
            lab = Lab(address, client_id=f"bench-view-{os.getpid()}-{i}", history=0)
            labs.append(lab)
            lab.kit(KIT, timeout=20).subscribe(on_sample)
            feeds.append(FrameFeed(address, KIT, stream, lambda frame, i=i: on_frame(i, frame)))
        conn.send(("ready", os.getpid()))
        while (message := conn.recv()) != "stop":
            if message == "start":
                with lock:
                    rec.update(frames=[], telemetry=[], bytes=[0] * count, n=[0] * count)
        with lock:
            dropped = sum(f.dropped_frames for f in feeds)
            conn.send(("result", {**rec, "dropped": dropped}))
    except Exception as err:
        conn.send(("error", f"viewers: {type(err).__name__}: {err}"))
    finally:
        for feed in feeds:
            with contextlib.suppress(Exception):
                feed.close()
        for lab in labs:
            with contextlib.suppress(Exception):
                lab.close()


def expect(conn: Connection, what: str, timeout: float = 90.0) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"no {what} from a child within {timeout:g} s")
    kind, value = conn.recv()
    if kind == "error":
        raise RuntimeError(value)
    if kind != what:
        raise RuntimeError(f"expected {what}, got {kind}")
    return value


# ============================================================== phases


@dataclass
class Phase:
    label: str
    viewers: int
    seconds: float
    broker_cpu: float = 0.0  # % of one core
    frame_ms: list[float] = field(default_factory=list)
    telemetry_ms: list[float] = field(default_factory=list)
    bytes_per_viewer: list[int] = field(default_factory=list)
    frames_per_viewer: list[int] = field(default_factory=list)
    dropped: int = 0
    screen_ms: list[float] = field(default_factory=list)  # Chromium pages, when open
    pages: int = 0

    def kbps(self) -> float:
        if not self.bytes_per_viewer:
            return float("nan")
        return sum(self.bytes_per_viewer) / len(self.bytes_per_viewer) / self.seconds / 1000

    def fps(self) -> float:
        if not self.frames_per_viewer:
            return float("nan")
        return sum(self.frames_per_viewer) / len(self.frames_per_viewer) / self.seconds


def run_phase(
    ctx: Any,
    broker: Broker,
    viewer_creds: Credentials,
    label: str,
    stream: str,
    viewers: int,
    procs: int,
    args: argparse.Namespace,
    pages: BrowserPages | None = None,
) -> Phase:
    phase = Phase(label, viewers, args.seconds, pages=len(pages.pages) if pages else 0)
    children: list[tuple[Any, Connection]] = []
    try:
        per = [viewers // procs + (1 if i < viewers % procs else 0) for i in range(procs)]
        for n in (n for n in per if n):
            children.append(
                common.spawn(
                    ctx,
                    viewer_worker,
                    broker.host,
                    broker.port,
                    viewer_creds.as_dict(),
                    stream,
                    n,
                )
            )
        for _proc, conn in children:
            expect(conn, "ready")
        time.sleep(args.warmup)
        broker_proc = psutil.Process(broker.process.pid)
        for _proc, conn in children:
            conn.send("start")
        if pages is not None:
            pages.reset()
        cpu0, t0 = broker_proc.cpu_times(), time.monotonic()
        time.sleep(args.seconds)
        cpu1, elapsed = broker_proc.cpu_times(), time.monotonic() - t0
        if pages is not None:
            phase.screen_ms = pages.delays()
        for _proc, conn in children:
            conn.send("stop")
        phase.seconds = elapsed
        busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        phase.broker_cpu = 100 * busy / elapsed
        for _proc, conn in children:
            result = expect(conn, "result")
            phase.frame_ms += result["frames"]
            phase.telemetry_ms += result["telemetry"]
            phase.bytes_per_viewer += result["bytes"]
            phase.frames_per_viewer += result["n"]
            phase.dropped += result["dropped"]
    finally:
        for proc, _conn in children:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return phase


# ============================================================== report


def ms(values: list[float], q: float) -> str:
    return f"{common.percentile(values, q):.0f}" if values else "-"


def report(phases: list[Phase], args: argparse.Namespace, started: datetime) -> str:
    header = [
        "phase",
        "viewers",
        "frame delay p50 / p99 / max ms",
        "telemetry delay p50 / p99 ms",
        "Chromium screen delay p50 / p99 ms",
        "frames/s per viewer",
        "KB/s per viewer",
        "broker CPU %",
    ]
    rows = [
        [
            p.label,
            str(p.viewers),
            f"{ms(p.frame_ms, 50)} / {ms(p.frame_ms, 99)} / "
            + (f"{max(p.frame_ms):.0f}" if p.frame_ms else "-"),
            f"{ms(p.telemetry_ms, 50)} / {ms(p.telemetry_ms, 99)}",
            f"{ms(p.screen_ms, 50)} / {ms(p.screen_ms, 99)} ({p.pages} pages)" if p.pages else "-",
            f"{p.fps():.1f}" if p.viewers else "-",
            f"{p.kbps():.1f}" if p.viewers else "-",
            f"{p.broker_cpu:.1f}",
        ]
        for p in phases
    ]
    full = next((p for p in phases if p.label == "full" and p.frame_ms), None)
    p99 = common.percentile(full.frame_ms, 99) if full else float("nan")
    verdict = "PASS" if p99 <= P99_TARGET_MS else "FAIL"
    dropped = sum(p.dropped for p in phases)
    return "\n".join(
        [
            f"Run {started:%Y-%m-%d %H:%M} UTC on {common.machine()}.",
            "",
            f"One {MODEL} twin (telemetry at the model's rate, synthetic camera 10 frames/s "
            f"full 320 x 240 and 1 frame/s thumbnail 96 x 72, JPEG), {args.viewers} viewers in "
            f"{args.procs} processes, each a lab connection (telemetry) and a frame feed "
            f"(`FrameFeed`, the page's camera connection); {args.seconds:g} s per phase after "
            f"{args.warmup:g} s warm-up. Delay = viewer's receive time - the kit's stamp, at the "
            "viewer's MQTT client (the dashboard kernel). Besides them, during the full phase, "
            f"{args.pages} kit pages in headless Chromium (Voilà, the dashboard itself): kit "
            "stamp -> the frame's caption changed in the page (`Date.now()`, same clock).",
            "",
            common.markdown_table(rows, header),
            "",
            f"Full-picture frame delay p99 {p99:.0f} ms, target <= {P99_TARGET_MS:.0f} ms: "
            f"{verdict}. Frames dropped by the viewers' checks: {dropped}.",
            "",
            "    " + args.command,
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--procs", type=int, default=4, help="viewer processes")
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring window")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--pages", type=int, default=2, help="Chromium kit pages (0: none)")
    parser.add_argument("--quick", action="store_true", help="5 viewers, 8 s windows")
    parser.add_argument("--markdown", type=Path, help="write a section of this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.viewers, args.seconds = min(args.viewers, 5), 8.0
    args.command = ".venv/bin/python -m bench.camera " + " ".join(argv or [])
    return args


def main(argv: list[str] | None = None) -> None:
    import sys

    args = parse_args(sys.argv[1:] if argv is None else argv)
    ctx = mp.get_context("spawn")
    root = Path(tempfile.mkdtemp(prefix="smartlab-bench-"))
    root.chmod(0o711)  # the broker drops to the `mosquitto` account; it must reach its folder
    broker = Broker(root / "broker", port=free_port())
    started = datetime.now(UTC)
    twin = None
    pages: BrowserPages | None = None
    try:
        broker.start()
        kit_creds = broker.provision_kits([KIT])[KIT]
        viewer_creds = broker.provision_user("bench-camera-viewer")
        twin = common.spawn(
            ctx,
            common.twin_worker,
            broker.host,
            broker.port,
            [(KIT, MODEL, kit_creds.as_dict())],
            None,  # the model's own telemetry rate
        )
        expect(twin[1], "ready")
        progress(f"broker on {broker.host}:{broker.port}; twin {KIT} running")
        phases = [run_phase(ctx, broker, viewer_creds, "no viewers", P.STREAM_FULL, 0, 1, args)]
        if args.pages:
            progress(f"opening {args.pages} kit pages in Chromium")
            url = broker.address(viewer_creds.username).url()
            pages = BrowserPages(root, url, args.pages)
        for label, stream in (("full", P.STREAM_FULL), ("thumbnail", P.STREAM_THUMB)):
            progress(f"phase {label}: {args.viewers} viewers, {args.seconds:g} s")
            on_screen = pages if stream == P.STREAM_FULL else None
            phases.append(
                run_phase(
                    ctx,
                    broker,
                    viewer_creds,
                    label,
                    stream,
                    args.viewers,
                    args.procs,
                    args,
                    on_screen,
                )
            )
            if pages is not None:  # the thumbnail phase runs without them
                pages.close()
                pages = None
        text = report(phases, args, started)
        print(text)
        if args.markdown:
            common.write_markdown(args.markdown, TITLE, text, progress)
    finally:
        if pages is not None:
            pages.close()
        if twin is not None:
            with contextlib.suppress(Exception):
                twin[1].send("stop")
            twin[0].join(10)
            if twin[0].is_alive():
                twin[0].kill()
        broker.stop()


if __name__ == "__main__":
    main()
