"""
Download modes: what a cache miss does, per module pattern.

``DownloadMode`` is a mode name, ``file:<path>`` or ``custom:<base64>``; the
latter two hold Athens' download file (HCL)::

    downloadURL = "https://proxy.golang.org"
    mode = "async_redirect"
    download "github.com/myorg/*" { mode = "sync" }
    download "golang.org/x/*" {
        mode = "redirect"
        downloadURL = "https://mirror.example.com"
    }

Patterns follow GOPRIVATE syntax (comma-separated globs matching a path or
any of its prefixes); the first block that matches wins.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
from enum import Enum

import attrs

from athens import hcl


class Mode(str, Enum):
    SYNC = "sync"
    ASYNC = "async"
    REDIRECT = "redirect"
    ASYNC_REDIRECT = "async_redirect"
    NONE = "none"
    #: Stream from ``downloadURL`` without storing (modules that must not be cached); not in Athens.
    PASSTHROUGH = "passthrough"

    @property
    def redirects(self) -> bool:
        return self in (Mode.REDIRECT, Mode.ASYNC_REDIRECT)

    @property
    def needs_url(self) -> bool:
        return self.redirects or self is Mode.PASSTHROUGH

    @property
    def fills(self) -> bool:
        return self in (Mode.SYNC, Mode.ASYNC, Mode.ASYNC_REDIRECT)


class PolicyError(ValueError):
    pass


def _elem_match(pattern: str, elem: str) -> bool:
    # path.Match semantics per element: '*' never crosses '/', which elements cannot hold anyway.
    return fnmatch.fnmatchcase(elem, pattern)


def match_patterns(patterns: str, path: str) -> bool:
    """GOPRIVATE-style: does any glob in the comma list match ``path`` or a prefix of it?"""
    elems = path.split("/")
    for pattern in patterns.split(","):
        pattern = pattern.strip().rstrip("/")
        if not pattern:
            continue
        parts = pattern.split("/")
        if len(parts) <= len(elems) and all(_elem_match(p, e) for p, e in zip(parts, elems)):
            return True
    return False


@attrs.frozen
class Rule:
    patterns: str
    mode: Mode
    download_url: str


@attrs.frozen
class DownloadPolicy:
    mode: Mode = Mode.SYNC
    download_url: str = ""
    rules: tuple[Rule, ...] = ()

    def for_module(self, module: str) -> tuple[Mode, str]:
        """The mode and redirect URL for ``module``: first matching block, else the defaults."""
        for rule in self.rules:
            if match_patterns(rule.patterns, module):
                return rule.mode, rule.download_url or self.download_url
        return self.mode, self.download_url

    def fill_url(self, module: str) -> str:
        """The upstream a matching block names for filling (its own ``downloadURL``), or ``""``."""
        for rule in self.rules:
            if match_patterns(rule.patterns, module):
                return rule.download_url if rule.mode.fills else ""
        return ""

    def check(self) -> None:
        """Redirect modes need somewhere to redirect to."""
        for mode, url, where in [(self.mode, self.download_url, "the default")] + [
            (r.mode, r.download_url or self.download_url, f'download "{r.patterns}"') for r in self.rules
        ]:
            if mode.needs_url and not url:
                raise PolicyError(f"{where} uses mode {mode.value!r} but no downloadURL is set")


def parse_mode(name: str, where: str) -> Mode:
    try:
        return Mode(name.strip())
    except ValueError:
        raise PolicyError(f"{where}: unknown mode {name!r} (use one of: {', '.join(m.value for m in Mode)})") from None


def load_policy(download_mode: str, download_url: str = "") -> DownloadPolicy:
    """Build the policy from ``DownloadMode`` and ``DownloadURL``."""
    if download_mode.startswith("file:"):
        path = download_mode[len("file:") :]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise PolicyError(f"download file {path}: {e.strerror}") from None
        policy = parse_download_file(text, download_url, path)
    elif download_mode.startswith("custom:"):
        try:
            text = base64.b64decode(download_mode[len("custom:") :], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise PolicyError("custom: must be followed by base64 of a download file") from None
        policy = parse_download_file(text, download_url, "custom download file")
    else:
        policy = DownloadPolicy(parse_mode(download_mode or "sync", "DownloadMode"), download_url)
    policy.check()
    return policy


# --- the download file ------------------------------------------------------


def parse_download_file(text: str, default_url: str = "", where: str = "download file") -> DownloadPolicy:
    """Athens' download file: ``mode``, ``downloadURL`` and ``download "<patterns>" { mode, downloadURL }`` blocks."""
    try:
        body = hcl.parse(text)
    except hcl.HCLError as e:
        raise PolicyError(f"{where}, {e}") from None
    for block in body.blocks:
        if block.kind != "download":
            raise PolicyError(f"{where}, line {block.line}: unknown block {block.kind!r} (download)")
        if len(block.labels) != 1:
            raise PolicyError(f'{where}, line {block.line}: a download block has one label: download "<patterns>" {{')
        if block.body.blocks:
            raise PolicyError(f"{where}, line {block.body.blocks[0].line}: blocks do not nest in a download block")
    top = _settings(body, where)
    url = top["downloadURL"][0] if "downloadURL" in top else default_url
    mode = parse_mode(top["mode"][0], f"{where}, line {top['mode'][1]}") if "mode" in top else Mode.SYNC
    rules = []
    for block in body.blocks:
        settings = _settings(block.body, where)
        if "mode" not in settings:
            raise PolicyError(f'{where}, line {block.line}: download "{block.labels[0]}" has no mode')
        rules.append(Rule(block.labels[0], parse_mode(settings["mode"][0], f"{where}, line {settings['mode'][1]}"),
                          settings["downloadURL"][0] if "downloadURL" in settings else ""))
    return DownloadPolicy(mode, url, tuple(rules))


def _settings(body: hcl.Body, where: str) -> dict[str, tuple[str, int]]:
    """``mode`` and ``downloadURL``: strings, each set once."""
    found: dict[str, tuple[str, int]] = {}
    for attribute in body.attributes:
        line = f"{where}, line {attribute.line}"
        if attribute.name not in ("mode", "downloadURL"):
            raise PolicyError(f"{line}: unknown setting {attribute.name!r} (mode, downloadURL, download)")
        if attribute.name in found:
            raise PolicyError(f"{line}: {attribute.name} is set twice (first on line {found[attribute.name][1]})")
        if not isinstance(attribute.value, str):
            raise PolicyError(f"{line}: {attribute.name} must be a string")
        value = attribute.value.strip()  # a heredoc ends with a newline; names and URLs hold no spaces
        if any(c.isspace() or ord(c) < 32 for c in value):
            raise PolicyError(f"{line}: {attribute.name} {value!r} holds spaces or control characters")
        found[attribute.name] = (value, attribute.line)
    return found
