"""Alembic's environment for the lab service's store (site_config.migrations runs it)."""

from lab_service.store import Base
from site_config.migrations import run_env

run_env(Base.metadata)
