"""The shelf of Go toolchains the proxy's go command switched to (see also tests/e2e/test_toolchain.py)."""

from __future__ import annotations

import os

from athens.fetch.toolchains import ToolchainShelf

DIR = "toolchain@v0.0.1-go1.99.0.linux-amd64"


def unpacked(gomodcache, name: str = DIR, partial: bool = False):
    target = gomodcache / "golang.org" / name
    (target / "bin").mkdir(parents=True)
    (target / "bin" / "go").write_text("#!/bin/sh\n")
    if partial:  # the go command still extracting it
        (gomodcache / "golang.org" / f"{name}.partial").write_text("")
    os.chmod(gomodcache / "golang.org", 0o555)  # as the module cache leaves it
    return target


def test_a_complete_toolchain_is_moved_and_linked_once(tmp_path):
    shelf = ToolchainShelf(str(tmp_path / "shelf"))
    assert shelf.prepare()
    unpacked(tmp_path / "cache1")
    unpacked(tmp_path / "cache2")
    unpacked(tmp_path / "cache3", "toolchain@v0.0.1-go1.98.0.linux-amd64", partial=True)
    assert shelf.keep(str(tmp_path / "cache1")) == ["go1.99.0"]
    assert shelf.keep(str(tmp_path / "cache2")) == []  # already kept: the second copy is left to be removed
    assert shelf.keep(str(tmp_path / "cache3")) == []
    assert shelf.keep(str(tmp_path / "nothing")) == []
    assert shelf.names() == ["go1.99.0"]
    assert os.path.realpath(tmp_path / "shelf" / "bin" / "go1.99.0") == str(tmp_path / "shelf" / DIR / "bin" / "go")


def test_the_directory_is_private_and_never_anothers(tmp_path):
    (tmp_path / "mine" / "bin").mkdir(parents=True)
    os.chmod(tmp_path / "mine" / "bin", 0o777)
    assert ToolchainShelf(str(tmp_path / "mine")).prepare()  # ours: made private
    assert [os.stat(p).st_mode & 0o777 for p in (tmp_path / "mine", tmp_path / "mine" / "bin")] == [0o700, 0o700]
    if os.geteuid() == 0:  # only root can give a directory away (CI runs as root)
        (tmp_path / "theirs" / "bin").mkdir(parents=True)
        os.chown(tmp_path / "theirs" / "bin", 65534, 65534)  # nobody's
        assert not ToolchainShelf(str(tmp_path / "theirs")).prepare()


def test_across_file_systems_it_is_copied(tmp_path, monkeypatch):
    import errno

    from athens.fetch import toolchains

    real_rename = os.rename

    def rename(source, target):  # the first rename is the move of the toolchain: as from tmpfs to a disk
        if str(source).endswith(DIR):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(source, target)

    monkeypatch.setattr(toolchains.os, "rename", rename)
    shelf = ToolchainShelf(str(tmp_path / "shelf"))
    assert shelf.prepare()
    unpacked(tmp_path / "cache")
    assert shelf.keep(str(tmp_path / "cache")) == ["go1.99.0"]
    assert (tmp_path / "shelf" / DIR / "bin" / "go").read_text() == "#!/bin/sh\n"
    assert sorted(p.name for p in (tmp_path / "shelf").iterdir()) == ["bin", DIR]  # no copy left half way
