"""Every default path of the platform, in one place."""

from __future__ import annotations

import os
from pathlib import Path

SITE_ENV = "SMARTLAB_SITE"
STATE_DIR_ENV = "SMARTLAB_STATE_DIR"
# Databases on a server (PostgreSQL) instead of SQLite files of the state folder.
HUB_DB_URL_ENV = "SMARTLAB_HUB_DB_URL"
LAB_DB_URL_ENV = "SMARTLAB_LAB_DB_URL"
LTI_DB_URL_ENV = "SMARTLAB_LTI_DB_URL"
DEMO_SITE = Path(__file__).resolve().parent / "demo-site.yaml"


def default_state_dir() -> Path:
    """$SMARTLAB_STATE_DIR, else ./var: tokens, databases, broker data, exchange, homes."""
    return Path(os.environ.get(STATE_DIR_ENV, "var")).resolve()


def default_site() -> Path:
    """$SMARTLAB_SITE, else the demo site."""
    return Path(os.environ.get(SITE_ENV) or DEMO_SITE)
