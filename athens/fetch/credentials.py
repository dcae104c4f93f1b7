"""
A private home directory for the go command's credentials.

``NETRCPath`` is copied, or ``GithubToken`` written, to ``.netrc`` and
``HGRCPath`` to ``.hgrc`` in a directory only this user can read; the go
command and git find them through ``HOME``/``NETRC``.  The user's own git
configuration stays in effect.  No secret is ever logged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import MutableMapping

from athens.config import Config


def prepare_home(config: Config, environ: MutableMapping[str, str]) -> str:
    """Return the private home to use, or ``""`` when no credentials are configured."""
    if not (config.netrc_path or config.github_token or config.hgrc_path):
        return ""
    home = tempfile.mkdtemp(prefix="athens-home-", dir=config.go_get_dir or None)
    os.chmod(home, 0o700)
    netrc = os.path.join(home, ".netrc")
    if config.netrc_path:
        shutil.copyfile(config.netrc_path, netrc)
    elif config.github_token:
        with open(netrc, "w") as f:
            f.write(f"machine github.com login {config.github_token} password x-oauth-basic\n")
    if os.path.exists(netrc):
        os.chmod(netrc, 0o600)
    if config.hgrc_path:
        shutil.copyfile(config.hgrc_path, os.path.join(home, ".hgrc"))
        os.chmod(os.path.join(home, ".hgrc"), 0o600)
    user_gitconfig = os.path.join(os.path.expanduser("~"), ".gitconfig")
    if "GIT_CONFIG_GLOBAL" not in environ and os.path.exists(user_gitconfig):
        environ["GIT_CONFIG_GLOBAL"] = user_gitconfig
    return home
