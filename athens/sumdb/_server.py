"""
``/sumdb/<name>/...`` of the organisation's own checksum database, as the go command reads it.

``latest`` is the signed tree head; ``tile/8/<L>/<N>[.p/<W>]`` a hash tile and
``tile/8/data/<N>[.p/<W>]`` a data tile; ``lookup/<module>@<version>`` the
version's record and the signed tree head.  A lookup of a version the log
does not hold fills it first: from storage when the version is stored, else
through the stash under the download mode of its module (``sync`` waits for
it; ``async`` modes start the fill and answer 404; the others answer 404).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from athens.fetch.interface import OriginError
from athens.filter import Action
from athens.maintenance import verify_version
from athens.module import InvalidInput, ModuleVersion, decode_module, decode_version, is_canonical_version
from athens.modzip import InvalidZip
from athens.policy import Mode
from athens.singleflight import SingleFlight
from athens.storage.interface import IStorage, NotFound, StorageError, StorageUnavailable
from athens.sumdb._own import OwnSumDB
from athens.sumdb._tlog import Tile, format_record
from athens.web.responses import body, text

if TYPE_CHECKING:
    from athens.origin import Origin

log = Logger()

NOTE = b"text/plain; charset=UTF-8"
TILE = b"application/octet-stream"
#: What the go command's checksum database server accepts as ``<module>@<version>`` (escaped).
_MOD_VER = re.compile(r"^[^@]+@v[0-9]+\.[0-9]+\.[0-9]+(-[^@]*)?(\+incompatible)?$")


class Refused(Exception):
    """The filter file excludes the module (403)."""


@attrs.define
class OwnSumDBResource:
    own: OwnSumDB
    storage: IStorage
    origin: Origin | None = None
    _fills: SingleFlight[None] = attrs.field(factory=SingleFlight)

    @property
    def name(self) -> str:
        return self.own.name

    async def handle(self, request: IRequest, path: str) -> bytes:
        try:
            if path == "supported":
                return text(request, "OK")
            if path == "latest":
                return body(request, NOTE, await self.own.log.latest())
            if path.startswith("tile/"):
                try:
                    tile = Tile.parse(path)
                except ValueError:
                    return text(request, f"bad request: invalid tile syntax: {path}", 400)
                return body(request, NOTE if tile.level == -1 else TILE, await self.own.log.tile(tile))
            if path.startswith("lookup/"):
                return await self._lookup(request, path[len("lookup/") :])
            return text(request, f"not found: {path!r} is not a checksum database path", 404)
        except InvalidInput as e:
            return text(request, f"bad request: {e}", 400)
        except Refused as e:
            return text(request, f"forbidden: {e}", 403)
        except NotFound as e:
            return text(request, f"not found: {e}", 404)
        except OriginError as e:
            return text(request, str(e), e.status)
        except StorageUnavailable as e:
            log.warn("checksum database {name}: storage unavailable: {error}", name=self.name, error=str(e))
            return text(request, f"storage unavailable: {e}", 503)
        except StorageError as e:
            log.error("checksum database {name}: storage error: {error}", name=self.name, error=str(e))
            return text(request, f"storage error: {e}", 503)

    async def _lookup(self, request: IRequest, target: str) -> bytes:
        if not _MOD_VER.match(target):
            raise InvalidInput(f"invalid module@version syntax: {target!r}")
        escaped_module, _, escaped_version = target.partition("@")
        module, version = decode_module(escaped_module), decode_version(escaped_version)
        if not is_canonical_version(module, version):
            raise InvalidInput(f"{module}@{version} is not a canonical version of its module")
        request.module, request.module_version = module, version  # for the access line
        record_id = await self.own.log.lookup(module, version)
        if record_id is None:
            await self._fills.do(ModuleVersion(module, version), lambda: self._fill(module, version))
            record_id = await self.own.log.lookup(module, version)
            if record_id is None:
                raise NotFound(f"{module}@{version} is not in the checksum database {self.name}")
        record = format_record(record_id, await self.own.log.record(record_id))
        return body(request, NOTE, record + await self.own.log.latest())

    async def _fill(self, module: str, version: str) -> None:
        """Log a version: from storage if it is stored, else fetched under its download mode."""
        if await self.storage.exists(module, version):
            await self._admit_stored(module, version)
            return
        origin = self.origin
        mode = origin.policy.for_module(module)[0] if origin is not None else Mode.NONE
        if origin is not None and origin.filter is not None:
            action = origin.filter.action(module, version)
            if action is Action.EXCLUDE:
                raise Refused(f"{module} is excluded by the filter file")
            if action is Action.DIRECT:
                mode = Mode.NONE
        what = f"{module}@{version} is not in the checksum database {self.name}"
        if origin is None or not mode.fills:
            raise NotFound(f"{what}, and its download mode ({mode.value}) does not fetch it")
        if origin.offline:
            raise NotFound(f"{what} (NetworkMode offline: no origin is asked)")
        if mode is not Mode.SYNC:
            origin.stash.background(module, version)
            raise NotFound(f"{what} yet; it is being fetched, try again shortly")
        await origin.stash.stash(module, version)
        if await self.own.log.lookup(module, version) is None:  # stored, not logged: say why
            await self._admit_stored(module, version)

    async def _admit_stored(self, module: str, version: str) -> None:
        try:
            zip_hash = await verify_version(self.storage, ModuleVersion(module, version))
        except (InvalidZip, ValueError) as e:
            raise OriginError(f"the stored {module}@{version} is not a valid module version: {e}") from None
        await self.own.admit(module, version, zip_hash, await self.storage.go_mod(module, version))
