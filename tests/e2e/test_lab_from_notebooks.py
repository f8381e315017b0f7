"""Inside the hub: a student's notebook reaches the lab service and the kits with nothing typed
(the server carries the user's hub token and the lab service's address), and the public status
board answers anyone."""

from __future__ import annotations

import json

import pytest

from site_config.kits import load_kits
from site_config.paths import DEMO_SITE
from tests.e2e.hubclient import Browser, run_in_kernel

pytestmark = pytest.mark.broker

NOTEBOOK_CODE = """
import json
from labs.client import LabService, connect
from site_config.paths import DEMO_SITE
me = LabService().me()
lab = connect()
lab.wait_for_kits(%d, timeout=30)
print(json.dumps({"me": me, "kits": sorted(lab.kits())}))
lab.close()
"""


def test_a_notebook_uses_the_lab_without_typing_credentials(platform, browsers):
    kits = sorted(k.id for k in load_kits(DEMO_SITE))
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
