"""`smartlab deploy kubernetes --site FILE --out DIR`: write the chart's values and manifests."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from hub_config.kubernetes import cluster
from hub_config.kubernetes.manifests import platform_manifests
from hub_config.kubernetes.values import singleuser_environment, z2jh_values
from site_config.paths import default_site
from site_config.site import load_site

VALUES_FILE = "values.yaml"
MANIFESTS_DIR = "manifests"


def render(site_path: Path, out: Path, images: cluster.Images, public_url: str) -> list[Path]:
    """Write values.yaml and manifests/*.yaml; nothing is written if the site cannot be."""
    site = load_site(site_path)
    values = z2jh_values(site, images, public_url)
    manifests = platform_manifests(
        site, site_path.read_text(), images, singleuser_environment(site)
    )
    (out / MANIFESTS_DIR).mkdir(parents=True, exist_ok=True)
    written = [out / VALUES_FILE]
    written[0].write_text(yaml.safe_dump(values, sort_keys=False, allow_unicode=True))
    for name, objects in manifests.items():
        path = out / MANIFESTS_DIR / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False, allow_unicode=True))
        written.append(path)
    return written


def cmd_kubernetes(args: argparse.Namespace) -> int:
    images = cluster.Images(platform=args.image)
    written = render(args.site, args.out, images, args.public_url)
    print(
        f"wrote {len(written)} files to {args.out}: helm install with {VALUES_FILE}, "
        f"kubectl apply -f {MANIFESTS_DIR}/"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    deploy = commands.add_parser("deploy", help="deployment files generated from the site file")
    sub = deploy.add_subparsers(dest="deploy_command", required=True, metavar="TARGET")
    k8s = sub.add_parser(
        "kubernetes", help="Zero to JupyterHub values and the platform's manifests"
    )
    k8s.add_argument("--site", type=Path, default=default_site(), help="the site file")
    k8s.add_argument("--out", type=Path, required=True, help="folder to write into")
    k8s.add_argument(
        "--image",
        default=cluster.Images.platform,
        help="the platform image (this repository installed at /opt/smartlab)",
    )
    k8s.add_argument(
        "--public-url", default="https://lab.example.org", help="the hub's public address"
    )
    k8s.set_defaults(run=cmd_kubernetes)
