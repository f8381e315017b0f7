"""The spawner: each user's server as their own Unix account with a private home (as root).

LocalProcessSpawner already switches to the account named like the hub user; this adds what
The Littlest JupyterHub's UserCreatingSpawner adds: the account and its 0700 home are made on
first start. Without root nobody can switch accounts: servers then run as the hub's own account
in per-user folders, a demo mode with no isolation, said loudly in the log.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Bool, Integer, Unicode, default

from hub_config import spawn_line, spawn_progress
from hub_config.accounts import can_isolate, ensure_account, link_in_home
from hub_config.lab_profile import config_folders, language_of
from hub_config.server_forker import SOCKET_ENV, reachable, start_forked
from labs.board import DASHBOARDS
from site_config.cgroups import CgroupLimits, join

# The platform's Jupyter config folder (nbgrader's multi-course settings) for every server.
JUPYTER_CONFIG_DIR = Path(__file__).resolve().parent / "jupyter"
# Each home's read-only way to the dashboards (labs/dashboards in the checkout, wherever it
# lies): Voilà serves /user/<name>/voila/render/dashboards/<page>.ipynb through it.
DASHBOARDS_LINK = "dashboards"


class SiteSpawner(LocalProcessSpawner):
    home_root = Unicode("/home", help="Folder that holds the users' homes.").tag(config=True)
    isolate = Bool(help="Run each server as the user's own Unix account (needs root).").tag(
        config=True
    )

    concurrent_starts = Integer(
        min=1,
        help="Servers that may start at once, hub-wide; the others wait in line, first come "
        "first served (hub_config/spawn_line.py). Default: the cores this hub may use.",
    ).tag(config=True)

    @default("concurrent_starts")
    def _cores(self) -> int:
        return len(os.sched_getaffinity(0))  # os.cpu_count() counts cores this hub may not use

    @default("isolate")
    def _isolate_default(self) -> bool:
        return can_isolate()

    _cgroups: tuple[Path, ...] = ()  # the cgroups of this user's server, once made

    @property
    def home_dir(self) -> Path:
        return Path(self.home_root) / self.user.name

    def _prepare_account(self) -> None:
        ensure_account(self.user.name, self.home_dir)
        # LocalProcessSpawner leaves mem_limit and cpu_limit to others; we enforce them.
        self._cgroups = tuple(
            CgroupLimits(
                self.user.name, int(self.mem_limit or 0), float(self.cpu_limit or 0)
            ).prepare()
        )
        self._link_dashboards()

    def _link_dashboards(self) -> None:
        done = link_in_home(self.home_dir, DASHBOARDS_LINK, DASHBOARDS)
        if done == "left":
            self.log.warning(
                "%s has an own %s in %s: left as it is, so the dashboards are not served "
                "from this server (rename it and restart the server to get them)",
                self.user.name,
                DASHBOARDS_LINK,
                self.home_dir,
            )

    language = "en"  # of the request that started the server (hub_config.lab_profile)
    usual_language = ""  # of the owner's last own start, kept in the hub's database

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.usual_language = state.get("language", "")

    def get_state(self) -> dict[str, Any]:
        # Kept across stops (clear_state leaves it): a server the class warm-up starts
        # speaks the owner's usual language, not the warm-up's.
        state = super().get_state()
        if self.usual_language:
            state["language"] = self.usual_language
        return state

    async def start(self) -> Any:
        self.language = language_of(self.handler, self.user.name, self.usual_language)
        self.usual_language = self.language
        # In the hub's line of starts until the server answers (or the start fails).
        async with spawn_line.place(self):
            return await spawn_line.answered(self, await self._start())

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        async for event in spawn_progress.events(self):  # place in line, estimate, starting
            yield event

    async def _start(self) -> Any:
        if self.isolate:
            # useradd, chown and cgroup writes block: keep the hub's event loop free meanwhile.
            await asyncio.get_running_loop().run_in_executor(None, self._prepare_account)
            forker = os.environ.get(SOCKET_ENV)
            if reachable(forker):  # a warm, pre-imported server: hub_config/server_forker.py
                started = await start_forked(self, forker, [str(p) for p in self._cgroups])
                if started is not None:
                    return started
            if forker:
                self.log.warning(
                    "no server forker at %s: %s's server starts cold", forker, self.user.name
                )
        else:
            self.log.warning(
                "single-account demo mode: %s's server runs as this account, "
                "with no isolation between users (start the platform as root)",
                self.user.name,
            )
            self.home_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._link_dashboards()
        return await super().start()

    def make_preexec_fn(self, name: str) -> Any:
        if self.isolate:
            switch_account, cgroups = super().make_preexec_fn(name), self._cgroups

            def preexec() -> None:
                join(cgroups)  # still root here: the server and its kernels stay inside
                switch_account()

            return preexec
        home = str(self.home_dir)
        return lambda: os.chdir(home)

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        groups = [group.name for group in self.user.groups]
        folders = [str(p) for p in config_folders(groups, self.language)]
        env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
            [*folders, env.get("JUPYTER_CONFIG_PATH", str(JUPYTER_CONFIG_DIR))]
        )
        env["SMARTLAB_LANG"] = self.language  # the person's language, for what the server runs
        return env

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        if self.isolate:
            return super().user_env(env)
        env.update(USER=self.user.name, HOME=str(self.home_dir), SHELL="/bin/bash")
        return env
