"""Walking and checking a whole store: what the admin commands are made of."""

from __future__ import annotations

import json
import os
import tempfile
from typing import AsyncIterator

from twisted.internet.threads import deferToThread

from athens.modzip import check_zip
from athens.module import ModuleVersion
from athens.storage.interface import IStorage

PAGE = 500


async def everything(storage: IStorage) -> AsyncIterator[ModuleVersion]:
    """Every stored version, page by page through the catalog."""
    token = ""
    while True:
        page = await storage.catalog(token, PAGE)
        for item in page.items:
            yield item
        if not page.next_token:
            return
        token = page.next_token


async def verify_version(storage: IStorage, item: ModuleVersion) -> str:
    """The zip's h1: hash, after checking the zip rules and that .info and go.mod agree with it."""
    info = json.loads(await storage.info(item.path, item.version))
    if not isinstance(info, dict) or info.get("Version") != item.version:
        raise ValueError(".info does not name this version")
    mod = await storage.go_mod(item.path, item.version)
    fd, path = tempfile.mkstemp(prefix="athens-verify-", suffix=".zip")
    try:
        blob = await storage.zip(item.path, item.version)
        with os.fdopen(fd, "wb") as f:
            try:
                async for chunk in blob.chunks():
                    await deferToThread(f.write, chunk)
            finally:
                blob.close()
        return await deferToThread(check_zip, path, item.path, item.version, mod)
    finally:
        await deferToThread(os.unlink, path)
