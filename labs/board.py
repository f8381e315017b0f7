"""Serving the dashboards with Voilà: the command lines, and `smartlab board` (the public
read-only lab overview, meant to run as the hub service `status`).

    smartlab board --port 8870                     # the overview board, preheated kernels
    smartlab board --print                         # only print the voila command line
    smartlab board --dashboards --no-preheat       # every dashboard of labs/dashboards/

The board watches through a read-only MQTT observer account ($SMARTLAB_MQTT_URL; without it,
`--state-dir` creates the `status-board` observer account on the local broker) and, when
$SMARTLAB_TOKEN is set, reads the kits' pool state from the lab service with that (non-admin)
identity. It has no controls, and Voilà runs no code a visitor sends.

Behind JupyterHub (as a service) the base URL defaults to $JUPYTERHUB_SERVICE_PREFIX and the
port to the one in $JUPYTERHUB_SERVICE_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from site_config.platform_accounts import BOARD_ACCOUNT

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"
BOARD_NOTEBOOK = "overview.ipynb"
DEFAULT_PORT = 8870
# The board's kernels at once, preheated ones included: one per open board page (a kernel
# holds some 100 MB); visitors beyond it get 503 until a page closes.
MAX_KERNELS = 24
HEADER_ENVS = ["Accept-Language"]  # -> $HTTP_ACCEPT_LANGUAGE in the kernel (the language)
# The front-end extensions a dashboard needs; the others installed in the environment (nbgrader,
# the notebook UI, ...) would only be downloaded and started for nothing on every page.
EXTENSIONS = [
    "@voila-dashboards/widgets-manager8",
    "@jupyter-widgets/jupyterlab-manager",
    "bqplot",
    "bqscales",
]
# Voilà's lab template plus a server-rendered first paint (labs.pages.PageBox); Voilà finds
# it on Jupyter's data path, which `voila_env` extends with DATA_DIR.
TEMPLATE = "smartlab"
DATA_DIR = Path(__file__).resolve().parent / "share"


def voila_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with DATA_DIR first on $JUPYTER_PATH, for any process that runs Voilà."""
    paths = [str(DATA_DIR), *(p for p in env.get("JUPYTER_PATH", "").split(os.pathsep) if p)]
    return {**env, "JUPYTER_PATH": os.pathsep.join(dict.fromkeys(paths))}


def voila_command(
    target: Path = DASHBOARDS,
    *,
    port: int = DEFAULT_PORT,
    ip: str = "127.0.0.1",
    base_url: str = "/",
    preheat: dict[str, int] | None = None,
    extensions: list[str] | None = EXTENSIONS,
    python: str = sys.executable,
    module: str = "voila",
) -> list[str]:
    """The command line of a standalone Voilà serving `target` (a notebook or a folder).

    `preheat` maps notebook names (relative to the folder; the notebook itself in single
    notebook mode) to the number of kernels kept running ahead of visitors; the others start
    a kernel per visitor."""
    if not base_url.endswith("/"):
        base_url += "/"
    command = [
        python,
        "-m",
        module,
        str(target),
        "--no-browser",
        f"--port={port}",
        f"--Voila.ip={ip}",
        f"--Voila.base_url={base_url}",
        f"--template={TEMPLATE}",
        *(f"--VoilaConfiguration.http_header_envs={h}" for h in HEADER_ENVS),
        "--VoilaConfiguration.show_tracebacks=False",
        # A busy machine can delay a cell's last output past nbclient's 4 s default;
        # the page would then be sent without its widgets.
        "--VoilaExecutor.iopub_timeout=30",
        # Closing a tab shuts its kernel down by a beacon without the _xsrf field
        # (voila #1458: refused with 403, the kernel would run on). A standalone
        # Voilà has no login, so the XSRF check protects nothing here.
        # (traitlets passes the value as the string "True": any non-empty one is true)
        "--Voila.tornado_settings=disable_check_xsrf=True",
    ]
    command += [f"--VoilaConfiguration.extension_allowlist={name}" for name in extensions or ()]
    pools = {name: n for name, n in (preheat or {}).items() if n > 0}
    if pools:
        config = {"default": {"pool_size": 0}}
        for name, size in pools.items():
            config[name] = {"pool_size": size}
        command += [
            "--preheat_kernel=True",
            f"--pool_size={max(pools.values())}",
            f"--VoilaKernelManager.kernel_pools_config={json.dumps(config)}",
            # the pool refills right after a visitor takes a kernel
            "--VoilaKernelManager.fill_delay=10",
        ]
    return command


def bounded_kernels(max_kernels: int) -> list[str]:
    """Voilà options that cap its kernels at `max_kernels` (labs/board_kernels.py) and end
    those whose page is gone; the idle culler's period is what checks them."""
    return [
        "--VoilaConfiguration.multi_kernel_manager_class=labs.board_kernels.BoundedKernelManager",
        f"--BoundedKernelManager.max_kernels={max_kernels}",
        "--BoundedKernelManager.orphan_timeout=120",
        "--BoundedKernelManager.cull_idle_timeout=3600",
        "--BoundedKernelManager.cull_interval=30",
    ]


def board_command(
    port: int = DEFAULT_PORT,
    ip: str = "127.0.0.1",
    base_url: str = "/",
    pool_size: int = 2,
    python: str = sys.executable,
    max_kernels: int = MAX_KERNELS,
) -> list[str]:
    """The public overview board: its notebook alone, with `pool_size` preheated kernels and
    at most `max_kernels` kernels in all (anyone may open it)."""
    command = voila_command(
        DASHBOARDS / BOARD_NOTEBOOK,
        port=port,
        ip=ip,
        base_url=base_url,
        preheat={BOARD_NOTEBOOK: pool_size},
        python=python,
        module="labs.board_voila",  # Voilà, plus the redirect of the slash-less base URL
    )
    return command + bounded_kernels(max(max_kernels, pool_size + 1))


def _hub_defaults() -> tuple[str, int | None]:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    port = urllib.parse.urlsplit(url).port if url else None
    return prefix, port


def board_env(state_dir: Path | None, mqtt_port: int) -> dict[str, str]:
    """The environment of the board's kernels: an observer account, read-only flags."""
    env = {**os.environ, "SMARTLAB_BOARD_PUBLIC": "1"}
    if not env.get("SMARTLAB_MQTT_URL"):
        if state_dir is None:
            raise ValueError(
                "set SMARTLAB_MQTT_URL to a read-only observer account "
                "(`smartlab broker user status-board`) or pass --state-dir"
            )
        from hardware_kits.broker import Broker

        broker = Broker(state_dir / "broker", port=mqtt_port)
        if not broker.secrets_path.exists():
            raise ValueError(f"{broker.state_dir}: no broker state; start the broker first")
        creds = broker.provision_user(BOARD_ACCOUNT, [])  # observe role only: no command right
        env["SMARTLAB_MQTT_URL"] = broker.address(creds.username).url()
    return env


def cmd_board(args: argparse.Namespace) -> int:
    prefix, hub_port = _hub_defaults()
    base_url = args.base_url or prefix
    port = args.port or hub_port or DEFAULT_PORT
    if args.dashboards:
        command = voila_command(
            DASHBOARDS,
            port=port,
            ip=args.ip,
            base_url=base_url,
            preheat={} if args.no_preheat else {BOARD_NOTEBOOK: args.pool_size},
        )
    else:
        command = board_command(
            port=port,
            ip=args.ip,
            base_url=base_url,
            pool_size=0 if args.no_preheat else args.pool_size,
            max_kernels=args.max_kernels,
        )
    if args.print:
        print(shlex.join([f"JUPYTER_PATH={voila_env({})['JUPYTER_PATH']}", *command]))
        return 0
    env = voila_env(board_env(args.state_dir, args.mqtt_port))
    print(f"lab board on http://{args.ip}:{port}{base_url} (Ctrl-C stops it)", flush=True)
    if args.user:  # root has made the MQTT account; Voilà and its kernels run as the board's
        become(args.user, args.home, env)
        os.execve(command[0], command, env)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0


def become(user: str, home: Path | None, env: dict[str, str]) -> None:
    """Turn this (root) process into the Unix account `user` for good, made if missing with its
    private `home` as the platform makes its other accounts (hub_config/accounts.py)."""
    from jupyterhub.spawner import set_user_setuid

    from hub_config.accounts import ensure_account

    if os.geteuid() != 0:
        raise ValueError(f"--user {user}: only root can switch accounts")
    if home is None:
        raise ValueError(f"--user {user} needs --home (the account's home folder)")
    # The hub gives its services a short PATH; useradd and usermod live in the sbin folders.
    paths = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(dict.fromkeys([*paths, "/usr/sbin", "/sbin"]))
    account = ensure_account(user, home)
    set_user_setuid(user, chdir=False)()  # groups, gid, uid: no way back to root
    os.chdir(account.pw_dir)
    env.update(HOME=account.pw_dir, USER=user, LOGNAME=user)


def register(commands: argparse._SubParsersAction) -> None:
    board = commands.add_parser("board", help="serve the public lab overview board (Voilà)")
    board.add_argument(
        "--port", type=int, help=f"port (default {DEFAULT_PORT}, or the hub service's)"
    )
    board.add_argument("--ip", default="127.0.0.1", help="address (default 127.0.0.1)")
    board.add_argument("--base-url", help="URL prefix (default $JUPYTERHUB_SERVICE_PREFIX or /)")
    board.add_argument(
        "--pool-size", type=int, default=2, help="preheated kernels kept ready (default 2)"
    )
    board.add_argument("--no-preheat", action="store_true", help="start a kernel per visitor")
    board.add_argument(
        "--dashboards",
        action="store_true",
        help="serve every dashboard of labs/dashboards, not only the board",
    )
    board.add_argument("--print", action="store_true", help="print the voila command line")
    board.add_argument(
        "--state-dir",
        type=Path,
        help="platform state folder: create the board's observer account on "
        "its broker when $SMARTLAB_MQTT_URL is not set",
    )
    board.add_argument("--mqtt-port", type=int, default=1883, help="broker port (default 1883)")
    board.add_argument(
        "--max-kernels",
        type=int,
        default=MAX_KERNELS,
        help=f"most kernels at once, preheated included (default {MAX_KERNELS})",
    )
    board.add_argument(
        "--user",
        help=f"as root: run Voilà as this Unix account (the hub uses {BOARD_ACCOUNT!r}), "
        "made if missing",
    )
    board.add_argument("--home", type=Path, help="that account's home folder")
    board.set_defaults(run=cmd_board)
