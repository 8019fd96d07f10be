"""One target resolution (runtime.harness.target_url) for the harness and every pipeline stage."""

from __future__ import annotations

import dataclasses

import pytest

from edgecomp.errors import UserInputError
from edgecomp.pipeline.export import ExportRequest
from edgecomp.pipeline.rounds import _stand_in
from edgecomp.profiles import load_profile
from edgecomp.runtime.harness import target_url
from edgecomp.runtime.transport import parse_target


def test_adb_profile_without_serial_resolves_to_adb_not_a_local_stand_in(tmp_path):
    pixel = load_profile("pixel-8")
    assert pixel.target.transport == "adb" and pixel.target.url is None
    assert target_url(pixel, None) == "adb"
    req = ExportRequest(profile=pixel, outdir=str(tmp_path))
    assert req.target_url() == "adb"
    assert parse_target(req.target_url()).kind == "adb"
    assert not _stand_in(req)  # the phone itself, so no host-filtered execution providers are sent to it


def test_adb_serial_in_profile_becomes_an_adb_url():
    pixel = load_profile("pixel-8")
    pixel = dataclasses.replace(pixel, target=dataclasses.replace(pixel.target, url="R5CT1234"))
    assert target_url(pixel, None) == "adb://R5CT1234"
    assert parse_target(target_url(pixel, None)).kind == "adb"


def test_local_target_for_a_board_is_a_stand_in(tmp_path):
    req = ExportRequest(profile=load_profile("jetson"), outdir=str(tmp_path), target="local")
    assert req.target_url() == "local" and _stand_in(req)
    assert target_url(load_profile("jetson"), None).startswith("ssh://")
    assert target_url(load_profile("x86-host"), None) == "local"


def test_ssh_profile_without_url_asks_for_target():
    jetson = load_profile("jetson")
    jetson = dataclasses.replace(jetson, target=dataclasses.replace(jetson.target, url=None))
    with pytest.raises(UserInputError, match="--target"):
        target_url(jetson, None)
