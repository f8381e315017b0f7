"""JupyterHub's config (`jupyterhub -f hub_config/jupyterhub_config.py`): all from the site file.

The site file is $SMARTLAB_SITE (default: the demo site next to this file). Groups are not set
with `load_groups`: JupyterHub refuses it together with `Authenticator.manage_groups`, and our
authenticator hands each person's groups over at login, so the site file stays their only truth.
"""

import os
from pathlib import Path

from hub_config import hub
from hub_config.site import load_site

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

site_path = Path(os.environ.get("SMARTLAB_SITE", Path(__file__).parent / "demo-site.yaml"))
site = load_site(site_path)

c.JupyterHub.authenticator_class = hub.SiteAuthenticator
c.SiteAuthenticator.site_path = str(site_path)
c.Authenticator.manage_groups = True
c.Authenticator.allow_all = False  # JupyterHub >= 5 wants this said explicitly
c.Authenticator.allowed_users = set(hub.hub_users(site))
c.Authenticator.admin_users = set(hub.admin_users(site))

c.JupyterHub.load_roles = hub.load_roles(site)
c.JupyterHub.services = hub.services(site)
c.Spawner.server_token_scopes = hub.SERVER_TOKEN_SCOPES

# The lab service runs outside the hub; it proves itself with this token (none in files).
lab_token = os.environ.get("SMARTLAB_LAB_SERVICE_TOKEN")
if lab_token:
    for service in c.JupyterHub.services:
        if service["name"] == hub.LAB_SERVICE:
            service["api_token"] = lab_token
