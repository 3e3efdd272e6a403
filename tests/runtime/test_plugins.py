"""runtime.api.check_api_version: a plug-in is refused unless built for this API's major
version and no newer minor one."""

from __future__ import annotations

import pytest

from protoc_x.runtime import api
from protoc_x.runtime.api import PluginError, check_api_version


# ---- the version rule ----------------------------------------------------------------------


def test_the_same_version_is_accepted():
    assert api.API_VERSION == (1, 0)
    check_api_version("plug-in 'x' (x 1)", (1, 0))


@pytest.mark.parametrize(
    "declared,says",
    [
        ((1, 1), "built for API 1.1; this protoc-x has API 1.0"),  # a newer minor
        ((2, 0), "built for API 2.0; this protoc-x has API 1.0"),  # another major, newer
        ((0, 9), "built for API 0.9; this protoc-x has API 1.0"),  # another major, older
        (None, "declares no API_VERSION"),
        ("1.0", "its API_VERSION is '1.0', not (major, minor)"),
        ((1,), "its API_VERSION is (1,), not (major, minor)"),
        ([1, 0], "its API_VERSION is [1, 0], not (major, minor)"),
        ((1, -1), "not (major, minor)"),
        ((True, 0), "not (major, minor)"),
    ],
)
def test_another_major_a_newer_minor_or_no_declaration_is_refused(declared, says):
    with pytest.raises(PluginError) as e:
        check_api_version("plug-in 'acme' (protoc-x-acme 0.1.0)", declared)
    assert str(e.value).startswith("plug-in 'acme' (protoc-x-acme 0.1.0) is refused: ")
    assert says in str(e.value)


def test_an_older_minor_is_accepted(monkeypatch):
    monkeypatch.setattr(api, "API_VERSION", (1, 3))
    for minor in (0, 2, 3):
        check_api_version("plug-in 'x' (x 1)", (1, minor))
    with pytest.raises(PluginError, match=r"built for API 1\.4; this protoc-x has API 1\.3"):
        check_api_version("plug-in 'x' (x 1)", (1, 4))
