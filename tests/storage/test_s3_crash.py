"""
kill -9 during saves to S3 (a real SeaweedFS): no reader ever sees half a version, and a later save
stores it whole.  The object-store twin of the disk store's crash test, plus one kill at the worst
point: the zip stored, the version's ``.info`` (its commit point) not yet.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from athens.storage.interface import NotFound
from athens.storage.objects import STALE, ObjectStorage
from tests.daemon import source_env
from tests.storage.buckets import new_s3_bucket
from tests.streams import once, pattern_digest

SAVER = r'''
import sys
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from athens.storage.awscreds import CredentialSettings
from athens.storage.objects import ObjectStorage
from athens.storage.s3 import S3Bucket, S3Settings
from tests.streams import pattern

class StopsAfterTheZip:
    """Says when the zip is stored, then hangs there: the parent kills it at that point."""

    def __init__(self, bucket):
        self.bucket = bucket

    def __getattr__(self, name):
        return getattr(self.bucket, name)

    def upload(self, key, chunks, exclusive=False):
        def hang(_):
            print("zipped", flush=True)
            return Deferred()
        return self.bucket.upload(key, chunks, exclusive).addCallback(hang)

async def main(reactor, endpoint, name, key, secret, mode, point):
    bucket = S3Bucket.connect(S3Settings(name, endpoint=endpoint, path_style=True,
                                         credentials=CredentialSettings(key, secret)), reactor)
    storage = ObjectStorage(StopsAfterTheZip(bucket) if point == "zipped" else bucket)
    module = "example.com/killed"
    if mode == "complete":  # completing a go.mod-only version: the zip, then the .info
        await storage.save_mod(module, "v1.0.0", b"module killed\n", None)
    print("saving", flush=True)
    await storage.save(module, "v1.0.0", b'{"Version":"v1.0.0"}', b"module killed\n",
                       pattern(b"k", 32 << 20, chunk=256 << 10, yield_every=1))
    print("saved", flush=True)
    await bucket.close()

task.react(lambda reactor: ensureDeferred(main(reactor, *sys.argv[1:])))
'''

MODULE, VERSION = "example.com/killed", "v1.0.0"
SIZE = 32 << 20


def kill_a_save(script, server, bucket: str, mode: str, point: float | str) -> None:
    """Kill the saver ``point`` seconds into its save, or once it says its zip is stored (``"zipped"``)."""
    child = subprocess.Popen([sys.executable, str(script), server.endpoint, bucket, server.key, server.secret, mode,
                              str(point)], stdout=subprocess.PIPE, env=source_env())
    try:
        assert child.stdout.readline() == b"saving\n"
        if point == "zipped":
            assert child.stdout.readline() == b"zipped\n"
        else:
            time.sleep(point)  # a different point of the save each round (0 s: at once)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


async def read_all(storage: ObjectStorage) -> bytes:
    blob = await storage.zip(MODULE, VERSION)
    return b"".join([c async for c in blob.chunks()])


@pytest.mark.parametrize("mode", ["new", "complete"])
@pytest_twisted.ensureDeferred
async def test_kill_9_during_a_save_to_s3_leaves_the_version_whole_or_absent(tmp_path, seaweedfs_server, mode):
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    whole_digest = pattern_digest(b"k", SIZE, chunk=256 << 10)
    outcomes = set()
    for point in ["zipped", *(0.15 * i for i in range(7))]:
        bucket = new_s3_bucket(seaweedfs_server)
        try:
            await deferToThread(kill_a_save, script, seaweedfs_server, bucket.settings.bucket, mode, point)
            storage = ObjectStorage(bucket)
            if await storage.exists(MODULE, VERSION):
                outcomes.add("whole")
                assert hashlib.sha256(await read_all(storage)).hexdigest() == whole_digest
                assert await storage.list(MODULE) == [VERSION]
                continue
            outcomes.add("absent")
            keys = (await bucket.list("")).keys
            assert f"{MODULE}/@v/{VERSION}.info" not in keys
            if point == "zipped":  # the whole zip is there, and invisible
                assert f"{MODULE}/@v/{VERSION}.zip" in keys
            assert await storage.list(MODULE) == []
            assert (await storage.catalog("", 10)).items == []
            for getter in (storage.zip, storage.info):
                with pytest.raises(NotFound):
                    await getter(MODULE, VERSION)
            if mode == "complete":  # the go.mod-only version is still what it was
                assert await storage.go_mod(MODULE, VERSION) == b"module killed\n"
            # a later save (once what the killed one left is stale) stores it whole
            later = ObjectStorage(bucket, clock=lambda: time.time() + STALE + 1)
            assert await later.save(MODULE, VERSION, b'{"Version":"v1.0.0"}', b"module killed\n", once(b"whole"))
            assert await storage.exists(MODULE, VERSION)
            assert await read_all(storage) == b"whole"
            assert await storage.info(MODULE, VERSION) == b'{"Version":"v1.0.0"}'
        finally:
            await bucket.close()
    assert "absent" in outcomes  # the kill did land mid-save

