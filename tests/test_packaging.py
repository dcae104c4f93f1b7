"""The installed package (not this source tree) has every module and registers `twistd athens`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.daemon import source_env, twistd

REPO = Path(__file__).resolve().parent.parent


def test_every_module_is_installed_and_the_plugin_is_found(tmp_path):
    modules = sorted(
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for path in (REPO / "athens").rglob("*.py")
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "import athens; assert not athens.__file__.startswith(sys.argv[1]), athens.__file__\n"
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "assert 'athens' in [p.tapname for p in getPlugins(IServiceMaker)]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script, str(REPO / "athens")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_versions_and_help_say_what_an_operator_needs():
    """Item 23 of the hardening issue: versions, no internal options in help, defaults shown."""
    from athens import __version__

    admin = subprocess.run([sys.executable, "-m", "athens.cli", "--version"], capture_output=True, text=True,
                           cwd=REPO, timeout=60)
    assert admin.returncode == 0 and __version__ in admin.stdout
    daemon = subprocess.run([twistd(), "athens", "--version"], capture_output=True, text=True, cwd=REPO,
                            env=source_env(), timeout=60)
    assert f"athens-py {__version__}" in daemon.stdout, daemon.stdout + daemon.stderr
    shown = subprocess.run([twistd(), "athens", "--help"], capture_output=True, text=True, cwd=REPO,
                           env=source_env(), timeout=60).stdout
    assert "--worker" not in shown.replace("--workers", "") and "inherit" not in shown
    assert "[default: one per core" in shown and "[default: disk]" in shown


def test_admin_refuses_what_it_cannot_do(tmp_path):
    """Item 23: 'delete foo' names the mistake; copy needs a target, and a memory target would keep nothing."""
    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "athens.cli", "--storage", "disk", "--storage-root",
                               str(tmp_path / "store"), *args], capture_output=True, text=True, cwd=REPO,
                              env=source_env(), timeout=60)

    deleted = admin("delete", "foo")
    assert deleted.returncode == 1 and "not module@version: 'foo'" in deleted.stderr
    for args, words in ((("copy",), "name the target"), (("copy", "--to-storage", "memory"), "memory store")):
        copied = admin(*args)
        assert copied.returncode == 2 and words in copied.stderr, copied.stderr
