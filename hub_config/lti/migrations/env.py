"""Alembic's environment for the LTI store (site_config.migrations runs it)."""

from hub_config.lti.store import METADATA
from site_config.migrations import run_env

run_env(METADATA)
