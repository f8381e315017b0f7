"""Jupyter server settings of every user's server (on $JUPYTER_CONFIG_PATH, like nbgrader's).

Voilà runs inside each server at /user/<name>/voila/render/...: the dashboards of labs/ need the
browser's language in the kernel, their widget front ends only, and patience with slow cells.
"""

from labs.board import EXTENSIONS, HEADER_ENVS, TEMPLATE

c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file

c.VoilaConfiguration.http_header_envs = HEADER_ENVS
c.VoilaConfiguration.extension_allowlist = EXTENSIONS
c.VoilaConfiguration.template = TEMPLATE  # found through $JUPYTER_PATH (labs.board)
c.VoilaExecutor.iopub_timeout = 30
# Kernels whose tab is gone and that do nothing are shut down after 30 minutes.
c.MappingKernelManager.cull_idle_timeout = 1800
c.MappingKernelManager.cull_interval = 120

# Server extensions are switched on and off in jupyter_server_config.d/*.json, as Jupyter's own
# `jupyter server extension enable` does: those files are merged across config folders, while a
# `jpserver_extensions` dict set in any config file replaces the others' whole. Here:
# labs.jupyterlab_links (GET <base_url>smartlab/links, the launcher tiles' and the "Smart City
# Lab" menu's pages; the front end is in labs/share/labextensions); servers/ turns nbgrader's
# formgrader and course list off in people's servers.
