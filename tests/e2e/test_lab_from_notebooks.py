"""Inside the hub: a student's notebook reaches the lab service and the kits with nothing typed
(the server carries the user's hub token and the lab service's address), and the public status
board answers anyone."""

from __future__ import annotations

import json

import pytest

from hardware_kits.fleet import load_kits
from tests.conftest import REPO
from tests.e2e.hubclient import Browser, run_in_kernel

pytestmark = pytest.mark.broker

NOTEBOOK_CODE = """
import json
from labs.client import LabService, connect
me = LabService().me()
lab = connect()
lab.wait_for_kits(%d, timeout=30)
print(json.dumps({"me": me, "kits": sorted(lab.kits())}))
lab.close()
"""


def test_a_notebook_uses_the_lab_without_typing_credentials(platform, browsers):
    kits = sorted(k.id for k in load_kits(REPO / "hub_config" / "demo-site.yaml"))
    boris = browsers["boris"]
    boris.start_server()
    boris.open("/user/boris/lab")
    seen = json.loads(run_in_kernel(boris, NOTEBOOK_CODE % len(kits)).strip().splitlines()[-1])
    assert seen["me"]["name"] == "boris"
    assert seen["me"]["institution"] == "univ-b"  # from the hub's groups, not typed anywhere
    assert seen["kits"] == kits


def test_the_status_board_is_public(platform):
    anonymous = Browser(platform.hub_url)
    answer = anonymous.get("/services/status/")
    assert answer.status_code == 200, answer.status_code
    assert "voila" in answer.text.lower()
