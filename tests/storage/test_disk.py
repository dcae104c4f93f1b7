"""What only the disk backend promises: Athens' layout, atomic renames, no leftovers."""

from __future__ import annotations

import os
import time

import pytest
import pytest_twisted

from athens.storage.disk import TMP_DIR, DiskStorage
from athens.storage.interface import StorageError
from tests.streams import Boom, once, pattern

MOD = "github.com/Owner/Repo"


def athens_write(root, module, version, files=("go.mod", "source.zip", "{v}.info")):
    """Write a version the way Athens' disk storage lays it out (not atomically)."""
    vdir = root.joinpath(*module.split("/"), version)
    vdir.mkdir(parents=True)
    for name in files:
        (vdir / name.format(v=version)).write_bytes(f"{name} of {module}@{version}".encode())
    return vdir


@pytest_twisted.ensureDeferred
async def test_an_athens_disk_cache_is_served_unchanged(tmp_path):
    root = tmp_path / "athens"
    athens_write(root, MOD, "v1.0.0")
    athens_write(root, MOD, "v1.1.0")
    athens_write(root, MOD + "/v2", "v2.0.0")
    storage = DiskStorage(root)
    assert sorted(await storage.list(MOD)) == ["v1.0.0", "v1.1.0"]
    assert await storage.info(MOD, "v1.0.0") == f"{{v}}.info of {MOD}@v1.0.0".encode()
    assert await storage.go_mod(MOD, "v1.1.0") == f"go.mod of {MOD}@v1.1.0".encode()
    blob = await storage.zip(MOD + "/v2", "v2.0.0")
    assert b"".join([c async for c in blob.chunks()]) == f"source.zip of {MOD}/v2@v2.0.0".encode()
    assert [str(i) for i in (await storage.catalog("", 10)).items] == [
        f"{MOD}@v1.0.0", f"{MOD}@v1.1.0", f"{MOD}/v2@v2.0.0"]


@pytest_twisted.ensureDeferred
async def test_what_we_write_is_athens_layout(tmp_path):
    storage = DiskStorage(tmp_path)
    await storage.save(MOD, "v1.0.0", b"{}", b"module x\n", once(b"zip"))
    vdir = tmp_path / "github.com" / "Owner" / "Repo" / "v1.0.0"
    assert sorted(os.listdir(vdir)) == ["go.mod", "source.zip", "v1.0.0.info"]
    assert (vdir / "source.zip").read_bytes() == b"zip"


@pytest_twisted.ensureDeferred
async def test_an_incomplete_directory_is_invisible_and_replaced_by_a_save(tmp_path):
    athens_write(tmp_path, MOD, "v1.0.0", files=("go.mod", "source.zip"))  # no .info: a crashed writer
    storage = DiskStorage(tmp_path)
    assert await storage.list(MOD) == []
    assert not await storage.exists(MOD, "v1.0.0")
    assert await storage.save(MOD, "v1.0.0", b"{}", b"module x\n", once(b"whole"))
    assert await storage.go_mod(MOD, "v1.0.0") == b"module x\n"
    assert await storage.list(MOD) == ["v1.0.0"]
    blob = await storage.zip(MOD, "v1.0.0")
    assert b"".join([c async for c in blob.chunks()]) == b"whole"


@pytest_twisted.ensureDeferred
async def test_a_directory_without_a_zip_is_a_go_mod_only_version(tmp_path):
    athens_write(tmp_path, MOD, "v1.0.0", files=("go.mod",))
    storage = DiskStorage(tmp_path)
    assert await storage.go_mod(MOD, "v1.0.0") == f"go.mod of {MOD}@v1.0.0".encode()
    assert not await storage.exists(MOD, "v1.0.0")
    assert await storage.save(MOD, "v1.0.0", b"{}", f"go.mod of {MOD}@v1.0.0".encode(), once(b"zip"))
    vdir = tmp_path / "github.com" / "Owner" / "Repo" / "v1.0.0"
    assert sorted(os.listdir(vdir)) == ["go.mod", "source.zip", "v1.0.0.info"]
    assert not os.listdir(tmp_path / TMP_DIR)


@pytest_twisted.ensureDeferred
async def test_a_failed_save_leaves_no_temporary_files(tmp_path):
    storage = DiskStorage(tmp_path)
    with pytest.raises(Boom):
        await storage.save(MOD, "v1.0.0", b"{}", b"m", pattern(b"x", 4 << 20, fail_at=1 << 20))
    assert os.listdir(tmp_path / TMP_DIR) == []
    assert not (tmp_path / "github.com" / "Owner" / "Repo" / "v1.0.0").exists()


@pytest_twisted.ensureDeferred
async def test_a_reader_keeps_its_zip_while_the_version_is_deleted(tmp_path):
    storage = DiskStorage(tmp_path)
    await storage.save(MOD, "v1.0.0", b"{}", b"m", once(b"z" * 100000))
    blob = await storage.zip(MOD, "v1.0.0")
    await storage.delete(MOD, "v1.0.0")
    assert b"".join([c async for c in blob.chunks()]) == b"z" * 100000
    assert os.listdir(tmp_path / TMP_DIR) == []


def test_stale_temporary_directories_are_removed_at_start(tmp_path):
    tmp = tmp_path / TMP_DIR
    (tmp / "save-old").mkdir(parents=True)
    (tmp / "save-old" / "source.zip").write_bytes(b"half")
    old = time.time() - 7200
    os.utime(tmp / "save-old", (old, old))
    (tmp / "save-young").mkdir()  # may belong to another worker writing right now
    DiskStorage(tmp_path)
    assert os.listdir(tmp) == ["save-young"]


def test_paths_outside_the_root_are_refused_even_unvalidated(tmp_path):
    storage = DiskStorage(tmp_path / "root")
    for module in ("../outside", "a/../../outside", TMP_DIR):
        with pytest.raises(StorageError):
            storage._module_dir(module)


@pytest_twisted.ensureDeferred
async def test_version_directories_follow_the_umask_like_athens(tmp_path):
    """Item 24 of the hardening issue: not 0700 whatever the umask (a backup job or nginx must read the store)."""
    import stat

    from athens.storage.disk import _UMASK

    storage = DiskStorage(str(tmp_path))
    await storage.save("example.com/m", "v1.0.0", b"{}", b"module m\n", once(b"zip"))
    vdir = tmp_path / "example.com" / "m" / "v1.0.0"
    assert stat.S_IMODE(os.stat(vdir).st_mode) == 0o777 & ~_UMASK
    assert stat.S_IMODE(os.stat(vdir / "source.zip").st_mode) == 0o666 & ~_UMASK


@pytest_twisted.ensureDeferred
async def test_a_reader_polling_during_a_publish_never_sees_half_a_version(tmp_path):
    """Atomicity observed (not only inferred from a writers' race): whole or absent, whenever a reader looks."""
    import threading

    from twisted.internet.threads import deferToThread

    storage = DiskStorage(str(tmp_path))
    size = 24 << 20
    vdir = tmp_path / "example.com" / "big" / "v1.0.0"
    seen: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                names = set(os.listdir(vdir))
            except FileNotFoundError:
                seen.append("absent")
                continue
            whole = names == {"go.mod", "source.zip", "v1.0.0.info"} and os.path.getsize(vdir / "source.zip") == size
            seen.append("whole" if whole else f"HALF: {sorted(names)}")

    reader = deferToThread(poll)
    await storage.save("example.com/big", "v1.0.0", b'{"Version":"v1.0.0"}', b"module big\n",
                       pattern(b"z", size, chunk=1 << 20))
    for _ in range(200):  # let the reader look at the finished version a few times too
        if seen.count("whole") >= 3:
            break
        await deferLater_(0.01)
    stop.set()
    await reader
    assert "absent" in seen and "whole" in seen
    assert [s for s in seen if s.startswith("HALF")] == []


async def deferLater_(seconds: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


SAVER = r'''
import sys
from twisted.internet import task
from athens.storage.disk import DiskStorage
from tests.streams import pattern

async def main(reactor, root, mode):
    storage = DiskStorage(root)
    module = "example.com/killed"
    if mode == "complete":  # completing a go.mod-only version: the zip is linked in last
        await storage.save_mod(module, "v1.0.0", b"module killed\n", None)
    print("saving", flush=True)
    await storage.save(module, "v1.0.0", b'{"Version":"v1.0.0"}', b"module killed\n",
                       pattern(b"k", 32 << 20, chunk=256 << 10, yield_every=1))
    print("saved", flush=True)

task.react(lambda reactor: __import__("twisted.internet.defer").internet.defer.ensureDeferred(
    main(reactor, sys.argv[1], sys.argv[2])))
'''


@pytest.mark.parametrize("mode", ["new", "complete"])
@pytest_twisted.ensureDeferred
async def test_kill_9_during_a_save_leaves_the_version_whole_or_absent(tmp_path, mode):
    """Atomicity under a crash: kill -9 at many points of a save; every time the store is consistent."""
    import hashlib
    import signal
    import subprocess
    import sys

    from twisted.internet.threads import deferToThread

    from tests.daemon import source_env
    from tests.streams import pattern_digest

    script = tmp_path / "saver.py"
    script.write_text(SAVER)

    def kill_a_save(root, delay: float) -> None:
        child = subprocess.Popen([sys.executable, str(script), str(root), mode], stdout=subprocess.PIPE,
                                 env=source_env())
        assert child.stdout.readline() == b"saving\n"
        time.sleep(delay)  # a different point of the save each round (0 s: at once)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()

    outcomes = set()
    module, version = "example.com/killed", "v1.0.0"
    for round_ in range(8):
        root = tmp_path / f"store{round_}"
        await deferToThread(kill_a_save, root, 0.03 * round_)
        storage = DiskStorage(root)
        vdir = root / "example.com" / "killed" / version
        if await storage.exists(module, version):
            outcomes.add("whole")
            blob = await storage.zip(module, version)
            digest = hashlib.sha256(b"".join([c async for c in blob.chunks()])).hexdigest()
            assert digest == pattern_digest(b"k", 32 << 20, chunk=256 << 10)
            assert await storage.list(module) == [version]
        else:
            outcomes.add("absent")
            assert await storage.list(module) == []
            assert not (vdir / "source.zip").exists()
            if mode == "complete":  # the go.mod-only version is still what it was
                assert await storage.go_mod(module, version) == b"module killed\n"
            # and the next save stores it whole
            assert await storage.save(module, version, b'{"Version":"v1.0.0"}', b"module killed\n", once(b"whole"))
            assert await storage.exists(module, version)
    assert "absent" in outcomes  # the kill did land mid-save
