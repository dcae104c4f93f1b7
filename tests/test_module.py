from __future__ import annotations

import pytest

from athens.module import (
    InvalidInput,
    canonical,
    check_file_path,
    check_path,
    check_version,
    compare,
    escape,
    is_pseudo_version,
    sort_versions,
    split_path_version,
    unescape,
)


@pytest.mark.parametrize(
    "path",
    ["github.com/Azure/azure-sdk-for-go", "golang.org/x/mod", "example.com/a/v2", "gopkg.in/yaml.v3",
     "gopkg.in/check.v1", "example.com/~user/x_y.z", "golang.org/toolchain"],
)
def test_valid_module_paths(path):
    check_path(path)
    assert unescape(escape(path)) == path


@pytest.mark.parametrize(
    "path",
    ["", "Github.com/x", "nodot/x", "-example.com/x", "example.com//x", "example.com/x/",
     "/example.com/x", "example.com/../x", "example.com/./x", "example.com/.x", "example.com/x.",
     "example.com/x y", "example.com/x\x00", "example.com/aux", "example.com/COM1.txt", "example.com/FOO~1",
     "example.com/x/v1", "example.com/x/v0", "example.com/x/v02", "example.com/x/v2.1", "gopkg.in/yaml",
     "gopkg.in/yaml.v03", "example.com/ü", "example.com/" + "a" * 256, "example.com/" + "/a" * 600],
)
def test_invalid_module_paths(path):
    with pytest.raises(InvalidInput):
        check_path(path)


def test_case_encoding():
    assert escape("github.com/Azure/X") == "github.com/!azure/!x"
    assert unescape("github.com/!azure/!x") == "github.com/Azure/X"
    for bad in ("github.com/Azure", "github.com/!Azure", "github.com/!", "github.com/!1"):
        with pytest.raises(InvalidInput):
            unescape(bad)


@pytest.mark.parametrize(
    "path, version",
    [("example.com/x", "v1.2.3"), ("example.com/x", "v0.0.0-20240102030405-abcdefabcdef"),
     ("example.com/x", "v2.0.0+incompatible"), ("example.com/x/v2", "v2.1.0-rc.1"),
     ("gopkg.in/yaml.v3", "v3.0.1"), ("gopkg.in/check.v1", "v0.0.0-20200101000000-abcdefabcdef"),
     # module.CheckPathMajor accepts +incompatible whatever the major (only a direct fetch from a
     # repository refuses it), so the go command takes these from a proxy.
     ("example.com/x/v2", "v2.0.0+incompatible"), ("example.com/x", "v1.0.0+incompatible")],
)
def test_storable_versions(path, version):
    check_version(path, version)


@pytest.mark.parametrize(
    "path, version",
    [("example.com/x", "v1.2"), ("example.com/x", "1.2.3"), ("example.com/x", "v1.2.3+meta"),
     ("example.com/x", "v2.0.0"), ("example.com/x/v2", "v3.0.0"), ("example.com/x/v2", "v3.0.0+incompatible"),
     ("gopkg.in/yaml.v1", "v2.0.0+incompatible"), ("example.com/x", "v1.02.3"), ("example.com/x", "v1.2.3-01"),
     ("example.com/x", "master"), ("example.com/x", ".."), ("example.com/x", "v1.0.0/../x")],
)
def test_unstorable_versions(path, version):
    with pytest.raises(InvalidInput):
        check_version(path, version)


def test_semver_order_and_canonical():
    assert canonical("v1.2") == "v1.2.0" and canonical("v1") == "v1.0.0" and canonical("v1.2.3+x") == "v1.2.3"
    assert canonical("junk") == ""
    assert sort_versions(["v1.10.0", "v1.2.0", "v1.2.0-rc.1", "v1.2.0-rc.10", "v1.2.0-rc.2", "v1.2.0-alpha", "v0.9.0"]) == [
        "v0.9.0", "v1.2.0-alpha", "v1.2.0-rc.1", "v1.2.0-rc.2", "v1.2.0-rc.10", "v1.2.0", "v1.10.0"]
    assert compare("v1.0.0", "v1.0.0+incompatible") == 0
    assert compare("junk", "v0.0.1") == -1


def test_pseudo_versions():
    assert is_pseudo_version("v0.0.0-20240102030405-abcdefabcdef")
    assert is_pseudo_version("v1.2.4-0.20240102030405-abcdefabcdef")
    assert is_pseudo_version("v1.2.3-pre.0.20240102030405-abcdefabcdef")
    assert not is_pseudo_version("v1.2.3-rc.1")
    assert not is_pseudo_version("v1.2.3")


def test_split_path_version():
    assert split_path_version("example.com/x/v2") == ("example.com/x", "/v2")
    assert split_path_version("example.com/x") == ("example.com/x", "")
    assert split_path_version("gopkg.in/yaml.v3") == ("gopkg.in/yaml", ".v3")


def test_file_paths():
    check_file_path("a/b c/ü.go")
    check_file_path(".github/x.yml")
    for bad in ("../x", "a/../b", "/abs", "a//b", "a\\b", "con.go", "a\x00b"):
        with pytest.raises(InvalidInput):
            check_file_path(bad)
