"""JupyterHub's config (`jupyterhub -f hub_config/jupyterhub_config.py`): all from the site file.

The site file is $SMARTLAB_SITE (default: site_config/demo-site.yaml); where things run
(state folder, ports, homes) comes from $SMARTLAB_RUNTIME, written by `smartlab up`
(site_config/runtime.py). Groups are not set with `load_groups`: JupyterHub refuses it together
with `Authenticator.manage_groups`, and our authenticator hands each person's groups over at
login, so the site file stays their only truth.
"""

import os
from pathlib import Path

from hub_config import hub, spawn_progress
from hub_config.lti.authenticator import LtiAuthenticator
from hub_config.spawner import SiteSpawner
from site_config.paths import default_site, default_state_dir
from site_config.runtime import Runtime
from site_config.site import load_site

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

site_path = default_site()
site = load_site(site_path)
runtime = Runtime.from_env(str(site_path), str(default_state_dir()))

# The site's people log in with their passwords; partner academies' people by launching the
# tool from their LMS (LTI 1.3, docs/lti.md), which the same authenticator verifies.
c.JupyterHub.authenticator_class = LtiAuthenticator
c.LtiAuthenticator.site_path = str(site_path)
c.LtiAuthenticator.state_dir = str(Path(runtime.state_dir) / "lti")
c.LtiAuthenticator.course_dir_template = f"{runtime.home_root}/grader-{{course}}/{{course}}"
c.LtiAuthenticator.tool_url = os.environ.get("SMARTLAB_PUBLIC_URL", runtime.hub_url)
c.Authenticator.manage_groups = True
c.Authenticator.allow_all = False  # JupyterHub >= 5 wants this said explicitly
c.Authenticator.allowed_users = set(hub.hub_users(site))
c.Authenticator.admin_users = set()  # no built-in admin: hub admins get the hub-admin role

c.JupyterHub.load_roles = hub.load_roles(site)
c.JupyterHub.admin_access = False  # hub admins manage servers, they do not enter them
c.JupyterHub.services = hub.services(site, runtime)
# Everyone lands on the front door after login; our pages over JupyterHub's own
# (hub_config/templates/; `templates/<name>` is the original) say Smart City Lab too.
c.JupyterHub.default_url = f"/services/{hub.HOME_SERVICE}/"
c.JupyterHub.template_paths = [str(Path(hub.__file__).resolve().parent / "templates")]

# Where: the public URL is the proxy's; the hub and the proxy's API stay on loopback.
c.JupyterHub.bind_url = runtime.hub_url
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{runtime.hub_api_port}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{runtime.proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = str(runtime.hub_dir / "proxy.pid")
c.JupyterHub.cookie_secret_file = str(runtime.hub_dir / "jupyterhub_cookie_secret")
# PostgreSQL in production (docs/deploy.md): SMARTLAB_HUB_DB_URL=postgresql+psycopg://...
c.JupyterHub.db_url = os.environ.get(
    "SMARTLAB_HUB_DB_URL", f"sqlite:///{runtime.hub_dir / 'jupyterhub.sqlite'}"
)

# Each user's server: their own Unix account and home when root (TLJH-style), JupyterLab with
# nbgrader's assignment list and Voilà, the platform's addresses in the environment.
c.JupyterHub.spawner_class = SiteSpawner
c.SiteSpawner.isolate = runtime.isolate
c.SiteSpawner.home_root = runtime.home_root
c.Spawner.cmd = [hub.venv_command("jupyterhub-singleuser")]
c.Spawner.args = hub.singleuser_args(runtime)
c.Spawner.default_url = "/lab"
c.Spawner.environment = hub.service_environment(runtime)
c.Spawner.server_token_scopes = hub.SERVER_TOKEN_SCOPES
c.Spawner.mem_limit = site.servers.mem_limit
c.Spawner.cpu_limit = site.servers.cpu_limit
# A class logging in at once on a small machine: 50 JupyterLab servers starting together on 2
# cores need minutes, not JupyterHub's default 30 s (bench/hub.py).
c.Spawner.http_timeout = 300
c.Spawner.start_timeout = 300
# ... and they start in one fair line, a few at once (hub_config/spawn_line.py); the spawn page
# says each person's place in it, and at the end that the server is ready, in their language.
if site.servers.concurrent_starts:
    c.SiteSpawner.concurrent_starts = site.servers.concurrent_starts
c.Spawner.progress_ready_hook = spawn_progress.ready_event
