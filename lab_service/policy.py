"""The rules of kit sharing, as traitlets configuration (like JupyterHub's own settings).

Set them in the lab service's config file, e.g. `c.SharingPolicy.slot_seconds = 20 * 60`.
"""

from __future__ import annotations

from traitlets import Float
from traitlets.config import Configurable

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY


class SharingPolicy(Configurable):
    slot_seconds = Float(15 * MINUTE, help="How long a walk-in session lasts.").tag(config=True)
    job_start_grace_seconds = Float(
        20.0,
        help="An experiment job's session lasts its duration plus this: the runner's time to "
        "claim the job, start the controller and stop it.",
    ).tag(config=True)
    heartbeat_timeout_seconds = Float(
        60.0,
        help="A session ends when its client sends no heartbeat for this long.",
    ).tag(config=True)
    offline_grace_seconds = Float(
        10.0,
        help="A session ends when its kit has been offline this long (a kit that "
        "reconnects for a moment keeps its session).",
    ).tag(config=True)
    safe_confirm_timeout_seconds = Float(
        10.0,
        help="After a session ends the kit must confirm its safe state within this time, "
        "or it is marked needs-attention and leaves the pool (fail closed).",
    ).tag(config=True)
    min_walk_in_seconds = Float(
        5 * MINUTE,
        help="No walk-in session is granted for less than this before a booked slot.",
    ).tag(config=True)
    fair_share_window_seconds = Float(
        HOUR,
        help="Fair share between institutions looks back this far: each walk-in session "
        "an institution had in it puts its waiting users one slot further back.",
    ).tag(config=True)
    booking_min_seconds = Float(15 * MINUTE, help="Shortest booking.").tag(config=True)
    booking_max_seconds = Float(120 * MINUTE, help="Longest booking.").tag(config=True)
    booking_granularity_seconds = Float(
        15 * MINUTE,
        help="Bookings start and end on multiples of this (Sahara's 15 minutes).",
    ).tag(config=True)
    booking_lead_seconds = Float(
        HOUR,
        help="Bookings must start at least this far ahead, so that they cannot be used "
        "to jump the walk-in queue (Sahara's horizon).",
    ).tag(config=True)
    booking_ahead_max_seconds = Float(28 * DAY, help="How far ahead one may book.").tag(config=True)
    booking_quota_user_week_seconds = Float(
        6 * HOUR,
        help="Booked time per user per calendar week (UTC, Monday first).",
    ).tag(config=True)
    booking_quota_institution_week_seconds = Float(
        20 * HOUR,
        help="Booked time per institution per calendar week.",
    ).tag(config=True)
    telemetry_retention_seconds = Float(
        7 * DAY,
        help="How long recorded telemetry is kept.",
    ).tag(config=True)
