"""
Go toolchains the proxy's own go command switched to, kept across fetches.

A module whose go.mod asks for a newer Go than the proxy's go command makes
that command switch toolchains (``GOTOOLCHAIN=auto``): it downloads
``golang.org/toolchain`` (70-90 MB) into the module cache and runs it.  Every
fetch has a module cache of its own that is removed afterwards, so without
this each such fetch downloaded the toolchain again (gomods/athens#2000:
40 s a request).  After each fetch, a toolchain found complete in its module
cache is moved here and linked as ``bin/go1.X.Y``; this ``bin`` comes first
in the go command's PATH, where the go command looks for a toolchain before
it downloads one.

Blocking (moves directories): call from a thread.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil

import attrs
from twisted.logger import Logger

log = Logger()

#: golang.org/toolchain@v0.0.1-go1.22.3.linux-amd64 (as the module cache names its directory).
_DIRECTORY = re.compile(r"^toolchain@v0\.0\.1-(go[0-9][0-9A-Za-z.]*?)\.([a-z0-9]+-[a-z0-9]+)$")


def default_directory(go_get_dir: str) -> str:
    """Under ``GoGetDir`` when it is set, else in the user's cache directory (never a shared temp directory)."""
    if go_get_dir:
        return os.path.join(go_get_dir, "athens-toolchains")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "athens-py", "toolchains")


@attrs.frozen
class ToolchainShelf:
    directory: str

    @property
    def bin(self) -> str:
        return os.path.join(self.directory, "bin")

    def prepare(self) -> bool:
        """
        Make the directory (mode 0700); False if it cannot be used safely: the go command runs what
        ``bin`` holds, so it must be this user's and writable by nobody else.
        """
        try:
            os.makedirs(self.bin, mode=0o700, exist_ok=True)
            for path in (self.directory, self.bin):
                if os.stat(path).st_uid == os.geteuid():
                    os.chmod(path, 0o700)
                st = os.stat(path)
                if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                    log.warn("not keeping Go toolchains in {path}: it is not this user's alone", path=path)
                    return False
        except OSError as e:
            log.warn("not keeping Go toolchains in {path}: {error}", path=self.directory, error=str(e))
            return False
        return True

    def keep(self, gomodcache: str) -> list[str]:
        """Move the complete toolchains of ``gomodcache`` here; the names (``go1.22.3``) newly kept."""
        found = os.path.join(gomodcache, "golang.org")
        try:
            entries = os.listdir(found)
        except OSError:
            return []
        kept = []
        for entry in entries:
            m = _DIRECTORY.match(entry)
            source = os.path.join(found, entry)
            if m is None or os.path.exists(source + ".partial") or not os.path.isfile(os.path.join(source, "bin", "go")):
                continue
            name = m.group(1)
            target = os.path.join(self.directory, entry)
            if not os.path.exists(target):
                try:
                    _move(source, target)
                except OSError as e:
                    if not os.path.exists(target):  # (another worker kept it first: fine)
                        log.warn("could not keep the toolchain {name}: {error}", name=name, error=str(e))
                        continue
            link = os.path.join(self.bin, name)
            if not os.path.lexists(link):
                fresh = f"{link}.{secrets.token_hex(8)}"  # workers and threads may link at once
                os.symlink(os.path.join(target, "bin", "go"), fresh)
                os.replace(fresh, link)
                kept.append(name)
                log.info("kept the Go toolchain {name}: later fetches that need it run it from {path}",
                         name=name, path=target)
        return kept

    def names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.bin))
        except OSError:
            return []



def _move(source: str, target: str) -> None:
    """A rename; across file systems (a temporary GOPATH on tmpfs), a copy renamed into place."""
    os.chmod(os.path.dirname(source), 0o755)  # the module cache is read-only unless -modcacherw
    try:
        os.rename(source, target)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    partial = f"{target}.{secrets.token_hex(8)}"
    try:
        shutil.copytree(source, partial, symlinks=True)
        os.rename(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
