"""`smartlab deploy kubernetes`: the site file as Zero to JupyterHub values and manifests.

`values.py` writes the Helm chart's values (KubeSpawner, culling, limits, the hub's roles and
services from hub_config/hub.py); `manifests.py` the platform's own workloads beside the chart
(Mosquitto, the lab service, one formgrader per course, the status board, ngshare as the
nbgrader exchange); `cluster.py` the names and images both share.
"""
