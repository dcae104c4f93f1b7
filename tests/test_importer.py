"""`athens-admin import`: good versions stored, bad ones refused with a reason."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile

import pytest
import pytest_twisted

from athens.importer import import_cache
from athens.modzip import InvalidZip, check_zip
from athens.module import unescape
from athens.storage.memory import MemoryStorage
from tests.daemon import admin_command, source_env


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def add_version(cache, escaped_module: str, version: str, *, files=None, info=None, mod=None, zip_bytes=None,
                ziphash=None, with_zip=True, with_info=True, with_mod=True):
    module = unescape(escaped_module)
    vdir = cache / "cache" / "download" / escaped_module / "@v"
    vdir.mkdir(parents=True, exist_ok=True)
    mod = mod if mod is not None else f"module {module}\n".encode()
    if with_info:
        (vdir / f"{version}.info").write_bytes(info if info is not None else json.dumps({"Version": version, "Time": "2024-01-01T00:00:00Z"}).encode())
    if with_mod:
        (vdir / f"{version}.mod").write_bytes(mod)
    if with_zip:
        prefix = f"{module}@{version}/"
        entries = files if files is not None else {prefix + "go.mod": mod, prefix + "x.go": b"package x\n"}
        (vdir / f"{version}.zip").write_bytes(zip_bytes if zip_bytes is not None else make_zip(entries))
    if ziphash:
        (vdir / f"{version}.ziphash").write_text(ziphash)
    return vdir


@pytest.fixture
def cache(tmp_path):
    c = tmp_path / "modcache"
    good = add_version(c, "example.com/good", "v1.0.0")
    add_version(c, "example.com/!upper!b", "v1.1.0")
    add_version(c, "example.com/bad", "v1.0.0", files={"other.com/x@v1.0.0/x.go": b"x"})
    add_version(c, "example.com/bad", "v1.0.1", files={"example.com/bad@v1.0.1/../../evil.go": b"x"})
    add_version(c, "example.com/bad", "v1.0.2", files={"example.com/bad@v1.0.2/A.go": b"1", "example.com/bad@v1.0.2/a.go": b"2"})
    add_version(c, "example.com/bad", "v1.0.3", files={"example.com/bad@v1.0.3/go.mod": b"module other\n"})
    add_version(c, "example.com/bad", "v1.0.4", ziphash="h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    add_version(c, "example.com/bad", "v1.0.5", info=b'{"Version": "v9.9.9"}')
    add_version(c, "example.com/bad", "v1.0.6", zip_bytes=b"not a zip at all")
    add_version(c, "example.com/bad", "v1.0.7", info=b"{not json")
    add_version(c, "example.com/bad", "v2.0.0")
    add_version(c, "example.com/partial", "v1.0.0", with_zip=False)  # go.mod for the module graph, and .info
    add_version(c, "example.com/partial", "v1.1.0", with_zip=False, with_info=False)  # go.mod alone (most of them)
    add_version(c, "example.com/partial", "v1.2.0", with_zip=False, mod=b"\xff\xfe")
    add_version(c, "example.com/partial", "v1.3.0", with_zip=False, with_mod=False)  # a .info alone
    # the real hash, recorded as the go command records it
    (good / "v1.0.0.ziphash").write_text(check_zip(str(good / "v1.0.0.zip"), "example.com/good", "v1.0.0") + "\n")
    (c / "cache" / "download" / "sumdb").mkdir()
    return c


@pytest_twisted.ensureDeferred
async def test_import_stores_good_versions_and_refuses_bad_ones(cache):
    storage = MemoryStorage()
    seen = []
    report = await import_cache(storage, str(cache), lambda done, total, r, cur: seen.append((done, total)))
    assert sorted(str(m) for m in report.imported) == ["example.com/UpperB@v1.1.0", "example.com/good@v1.0.0"]
    reasons = dict(report.refused)
    assert "does not have prefix" in reasons["example.com/bad@v1.0.0"]
    assert "not clean" in reasons["example.com/bad@v1.0.1"] or "invalid path element" in reasons["example.com/bad@v1.0.1"]
    assert "collision" in reasons["example.com/bad@v1.0.2"]
    assert "differs from the .mod" in reasons["example.com/bad@v1.0.3"]
    assert "differs from the recorded" in reasons["example.com/bad@v1.0.4"]
    assert "does not describe" in reasons["example.com/bad@v1.0.5"]
    assert "not a readable zip" in reasons["example.com/bad@v1.0.6"]
    assert "not JSON" in reasons["example.com/bad@v1.0.7"]
    assert "should be v0 or v1" in reasons["example.com/bad@v2.0.0"]
    assert "not UTF-8" in reasons["example.com/partial@v1.2.0"]
    assert report.incomplete == {".mod": 1}
    assert sorted(str(m) for m in report.mod_only) == ["example.com/partial@v1.0.0", "example.com/partial@v1.1.0"]
    assert await storage.go_mod("example.com/partial", "v1.1.0") == b"module example.com/partial\n"
    assert json.loads(await storage.info("example.com/partial", "v1.0.0"))["Version"] == "v1.0.0"
    assert not await storage.exists("example.com/partial", "v1.0.0")
    assert await storage.list("example.com/bad") == []
    assert seen[-1] == (15, 15)
    # a second import finds everything already there
    again = await import_cache(storage, str(cache))
    assert (len(again.imported), len(again.mod_only), len(again.present)) == (0, 0, 4)


def test_zip_size_limits(tmp_path, monkeypatch):
    import athens.modzip as modzip

    path = tmp_path / "z.zip"
    path.write_bytes(make_zip({"example.com/x@v1.0.0/big.txt": b"0" * 4096}))
    monkeypatch.setattr(modzip, "MAX_UNZIPPED", 1024)
    with pytest.raises(InvalidZip, match="uncompressed"):
        check_zip(str(path), "example.com/x", "v1.0.0")


def test_admin_command_reports_and_exits_nonzero_on_refusals(cache, tmp_path):
    root = tmp_path / "store"
    result = subprocess.run(
        [*admin_command(), "--storage", "disk", "--storage-root", str(root), "import", str(cache)],
        capture_output=True, text=True, env=source_env(), timeout=120,
    )
    assert result.returncode == 1
    assert "imported 2, go.mod only 2, already stored 0, refused 10, incomplete in the cache 1" in result.stdout
    assert "100% 15/15" in result.stderr  # progress, one line a step when not on a terminal
    assert (root / "example.com" / "good" / "v1.0.0" / "source.zip").is_file()
    assert not (root / "example.com" / "bad").exists()


def test_admin_command_explains_a_missing_cache(tmp_path):
    result = subprocess.run(
        [*admin_command(), "--storage", "memory", "import", str(tmp_path / "nothing")],
        capture_output=True, text=True, env=source_env(), timeout=60,
    )
    assert result.returncode == 2
    assert "no Go module download cache" in result.stderr
