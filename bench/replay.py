"""Opening a replay: one hour of a kit (10 Hz telemetry = 36,000 rows, plus commands and a
frame index) through the lab service's real HTTP application on SQLite, and the replay mode's
first render (labs/widgets/replay.py: fetch, series, plots, readings), against the same for one
minute in the same run. Target: the hour opens in <= 2 s.

    .venv/bin/python -m bench.replay [--rounds 5] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

from tornado.httpserver import HTTPServer

from bench.common import markdown_table, progress_printer, write_markdown
from hardware_kits.descriptor import load_models
from lab_service.api_http import Operations, make_app
from lab_service.api_identity import TokenIdentity
from lab_service.api_routes import ApiContext
from lab_service.history import insert_rows
from lab_service.policy import SharingPolicy
from lab_service.service import KitSharing
from lab_service.store import CommandRow, KitRow, SharingStore
from labs.client import LabService
from labs.i18n import Texts
from labs.widgets.replay import ReplayView

KIT, T0, TOKEN = "bench-lamp-1", 1_714_564_800.0, "bench-token-0123456789"
TARGET_S = 2.0


class _Offline:
    def online(self, kit_id: str) -> bool:
        return False


def fill(store: SharingStore) -> None:
    """One hour of a street-lighting kit at 10 Hz and a command a minute."""
    with store.transaction() as db:
        db.add(KitRow(id=KIT, model="street-lighting", registered_at=T0))
    rows = [
        {
            "kit_id": KIT,
            "seq": i,
            "ts": T0 + i / 10,
            "values": {
                "ambient-light": 200.0 + i % 50,
                "lamp-power": float(i % 100),
                "motion": i % 30 == 0,
            },
        }
        for i in range(36_000)
    ]
    insert_rows(store, rows)
    with store.transaction() as db:
        for m in range(60):
            db.add(
                CommandRow(
                    kit_id=KIT,
                    requester="ctl-anna",
                    command_id=f"c{m}",
                    target="dimming",
                    status="applied",
                    value=m,
                    ts=T0 + 60 * m + 1,
                )
            )


def serve(store: SharingStore) -> int:
    service = KitSharing(store, SharingPolicy(), None, _Offline(), clock=time.time)  # type: ignore[arg-type]
    ctx = ApiContext(service, None, lambda c: "", lambda kits: None)  # type: ignore[arg-type]
    users = {TOKEN: {"name": "lara", "institution": "centre", "lab_admin": True}}
    app = make_app(TokenIdentity(users), Operations(ctx).invoke)
    box: dict[str, int] = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        server = HTTPServer(app)
        server.listen(0, "127.0.0.1")
        box["port"] = next(iter(server._sockets.values())).getsockname()[1]
        ready.set()
        asyncio.get_event_loop().run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return box["port"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    progress = progress_printer("replay")
    with tempfile.TemporaryDirectory() as tmp:
        store = SharingStore(f"sqlite:///{tmp}/bench.sqlite")
        progress("recording one hour (36,000 samples)")
        fill(store)
        client = LabService(f"http://127.0.0.1:{serve(store)}", TOKEN, timeout=60)
        descriptor = load_models()["street-lighting"]
        rows = []
        for label, span in (("one minute (baseline)", 60.0), ("one hour", 3600.0)):
            rest, render = [], []
            for _ in range(args.rounds):
                began = time.perf_counter()
                body = client.replay(KIT, T0, T0 + span)
                rest.append(time.perf_counter() - began)
                began = time.perf_counter()
                ReplayView(client, KIT, T0, T0 + span, Texts("en"), descriptor)
                render.append(time.perf_counter() - began)
            p50_rest, p50_render = statistics.median(rest), statistics.median(render)
            verdict = "PASS" if p50_render <= TARGET_S else "FAIL"
            rows.append(
                [
                    label,
                    str(len(body["telemetry"])),
                    f"{p50_rest:.3f}",
                    f"{max(rest):.3f}",
                    f"{p50_render:.3f}",
                    f"{max(render):.3f}",
                    verdict if span > 60 else "-",
                ]
            )
            progress(f"{label}: REST {p50_rest:.3f} s, first render {p50_render:.3f} s")
        store.close()
    header = [
        "range",
        "rows",
        "REST p50 s",
        "REST max s",
        "open p50 s",
        "open max s",
        f"≤ {TARGET_S:.0f} s",
    ]
    table = markdown_table(rows, header)
    print(table)
    if args.markdown:
        body = (
            f"`python -m bench.replay --rounds {args.rounds}`: the REST call "
            "`GET /api/kits/<kit>/replay` (the service's HTTP application on SQLite, JSON "
            "decoded by the client) and the replay mode's opening (`ReplayView`: that call, "
            "the series, the plots and the readings row at the start), median and worst of "
            f"{args.rounds} rounds.\n\n{table}\n"
        )
        write_markdown(args.markdown, "Replay", body, progress)


if __name__ == "__main__":
    main()
