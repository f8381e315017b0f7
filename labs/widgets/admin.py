"""The lab admin's view: kit health, kits needing attention with their reason, maintenance,
utilisation per kit and per institution (charts), recent rejected commands and kit errors,
every experiment job with a Cancel button (jobs_view.py).

Everything comes from the lab service's REST API (a lab admin's token), refreshed in the
runner's pool; only widget traits change on the loop.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from labs.client import LabService, LabServiceError
from labs.i18n import Texts
from labs.widgets.jobs_view import AllJobsView
from labs.widgets.live import Runner
from labs.widgets.markup import html, text
from labs.widgets.overview import pool_badge, state_badge
from labs.widgets.polled import PolledView
from labs.widgets.session_panel import ServiceBanner
from labs.widgets.tables import BarChart, heading, table, when

RECENT_REJECTIONS = 12


def recent_rejections(commands_csv: str, limit: int = RECENT_REJECTIONS) -> list[dict[str, str]]:
    """The newest rejected commands of the service's command record (CSV), newest first."""
    rows = [r for r in csv.DictReader(io.StringIO(commands_csv)) if r.get("status") == "rejected"]
    return rows[-limit:][::-1]


def iso_to_epoch(text: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class AdminView(PolledView):
    def __init__(
        self,
        service: LabService,
        runner: Runner,
        texts: Texts,
        banner: ServiceBanner,
        *,
        refresh_s: float = 3.0,
    ) -> None:
        super().__init__(runner, banner)
        self.service = service
        self.texts = texts
        self.error: str | None = None

        self.title = W.HTML()
        self.health = W.HTML()
        self.health.add_class("smartlab-health")
        self.attention = W.HTML()
        self.attention.add_class("smartlab-attention")
        self.rejections = W.HTML()
        self.rejections.add_class("smartlab-rejections")
        self.by_kit = BarChart()
        self.by_institution = BarChart()
        self.kit_choice = W.Dropdown(layout=W.Layout(width="200px"))
        self.reason = W.Text(layout=W.Layout(width="260px"))
        self.on = W.Button(button_style="warning", icon="wrench", layout=W.Layout(width="auto"))
        self.off = W.Button(button_style="success", icon="check", layout=W.Layout(width="auto"))
        self.on.add_class("smartlab-maintenance-on")
        self.off.add_class("smartlab-maintenance-off")
        self.on.on_click(lambda _b: self._maintenance(True))
        self.off.on_click(lambda _b: self._maintenance(False))
        self.action = W.HTML()
        texts.label(self.on, "maintenance_on")
        texts.label(self.off, "maintenance_off")
        texts.label(self.reason, "reason", "placeholder")
        texts.label(self.kit_choice, "kit")  # its <label>: a select needs a name (axe select-name)
        self.headings = {
            key: heading(texts, key) for key in ("health", "attention", "usage", "rejections")
        }
        self.jobs = AllJobsView(service, runner, texts, banner)
        self.widget = W.VBox(
            [
                self.title,
                self.headings["health"],
                self.health,
                W.HBox([self.kit_choice, self.reason, self.on, self.off]),
                self.action,
                self.headings["attention"],
                self.attention,
                self.jobs.widget,
                self.headings["usage"],
                W.HBox([self.by_kit.widget, self.by_institution.widget]),
                self.headings["rejections"],
                self.rejections,
            ]
        )
        self.widget.add_class("smartlab-admin")
        self.error_line = self.action
        texts.bind(self._render)
        self.start_polling(refresh_s)

    # ------------------------------------------------------------ data

    def fetch(self) -> dict[str, Any]:
        """Blocking: every figure the view shows (runs in the pool)."""
        kits = self.service.kits()
        health = {}
        for kit in kits:
            try:
                health[kit["id"]] = self.service.kit(kit["id"])
            except LabServiceError as err:
                if err.status != 404:  # retired between the two calls
                    raise
        return {
            "kits": kits,
            "health": health,
            "usage": self.service.request("GET", "/api/usage"),
            "rejections": recent_rejections(
                self.service.request("GET", "/api/records/commands.csv")
            ),
            "users": {str(s["id"]): s["user"] for s in self.service.sessions()},
            "at": time.time(),
        }

    def close(self) -> None:
        super().close()
        self.jobs.close()

    def _maintenance(self, on: bool) -> None:
        kit_id = self.kit_choice.value
        if not kit_id:
            return
        reason = self.reason.value.strip()

        def done(view: dict[str, Any]) -> None:
            self.action.value = html(
                "<small>{}: {}</small>", kit_id, self.texts.state(view["pool"])
            )
            self.refresh()

        def failed(err: BaseException) -> None:
            self.action.value = html("<span style='color:#b42318'>{}</span>", str(err))

        self.runner.submit(
            self.service.set_maintenance, kit_id, on, reason, done=done, failed=failed
        )

    # ------------------------------------------------------------ rendering

    def _render(self) -> None:
        t = self.texts
        self.title.value = html("<h3 style='margin:4px 0'>{}</h3>", t("admin"))
        data = self.data
        if data is None:
            self.health.value = text(t("loading"))
            return
        kits = data["kits"]
        ids = [k["id"] for k in kits]
        if list(self.kit_choice.options) != ids:
            self.kit_choice.options = ids
        rows, classes = [], []
        for kit in kits:
            h = data["health"].get(kit["id"], {})
            counters = h.get("counters") or {}
            last = h.get("last_telemetry_at")
            age = t("seconds_ago", n=int(data["at"] - last)) if last else t("never")
            safe = counters.get("safe")
            rows.append(
                [
                    html("<b>{}</b>", kit["id"]),
                    t.model(kit["model"]),
                    pool_badge(t, kit),
                    state_badge(t, h.get("mqtt_state") or ("ready" if kit["online"] else None)),
                    age,
                    counters.get("applied", "–"),
                    counters.get("rejected", "–"),
                    counters.get("errors", "–"),
                    safety_mark(t, safe, counters.get("at_rest")),
                ]
            )
            classes.append(f"smartlab-health-row smartlab-health-{kit['id']}")
        self.health.value = table(
            [
                t("kit"),
                t("model"),
                t("pool"),
                t("status"),
                t("last_sample"),
                t("applied"),
                t("rejected"),
                t("errors"),
                t("safe"),
            ],
            rows,
            row_classes=classes,
        )

        attention = [k for k in kits if k["pool"] in ("needs-attention", "maintenance")]
        if attention:
            self.attention.value = table(
                [t("kit"), t("pool"), t("reason")],
                [
                    [k["id"], pool_badge(t, {**k, "reason": ""}), k.get("reason", "")]
                    for k in attention
                ],
                row_classes=[f"smartlab-attention-{k['id']}" for k in attention],
            )
        else:
            self.attention.value = text(t("no_attention"))

        usage = data["usage"]
        self.by_kit.show(
            t("usage_kit"),
            [u["kit"] for u in usage["kits"]],
            [u["session_seconds"] / 60 for u in usage["kits"]],
        )
        self.by_institution.show(
            t("usage_institution"),
            [t.institution(u["institution"]) for u in usage["institutions"]],
            [u["session_seconds"] / 60 for u in usage["institutions"]],
        )

        rejected = data["rejections"]
        models = {k["id"]: k["model"] for k in kits}
        if rejected:
            self.rejections.value = table(
                [t("col_time"), t("col_kit"), t("col_target"), t("col_reason"), t("col_user")],
                [
                    [
                        when(iso_to_epoch(r["ts"])),
                        r["kit"],
                        t.name(t.point(models.get(r["kit"]), r["target"]), r["target"]),
                        t.reason(r.get("reason") or None, r.get("reason")),
                        data["users"].get(r.get("session_id", ""), r["requester"]),
                    ]
                    for r in rejected
                ],
            )
        else:
            self.rejections.value = text(t("no_rejections"))


def safety_mark(t: Callable[..., str], safe: bool | None, at_rest: bool | None) -> str:
    """The health table's safety column: safe, at rest (its automatic operation: normal for a
    kit nobody holds), neither, or unknown."""
    if safe is None:
        return "–"
    if safe:
        return "✓"
    return t("at_rest") if at_rest else "✗"
