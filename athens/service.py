"""The service tree twistd runs: listen, serve, and close storage last."""

from __future__ import annotations

from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from athens import __version__
from athens.config import Config
from athens.logs import make_observer
from athens.storage.cached import CachedStorage
from athens.storage.interface import IStorage
from athens.web.app import make_resource
from athens.web.site import ProxySite

log = Logger()


class AthensService(MultiService):
    """Owns the listening port and the storage; stops listening before it closes the store."""

    def __init__(self, config: Config, storage: IStorage, endpoint: str, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.storage = storage
        self.endpoint = endpoint
        self.site = ProxySite(make_resource(CachedStorage(storage, reactor.seconds), reactor))
        self.listener = strports.service(endpoint, self.site)
        self.listener.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        # twistd asks the application for its log observer once makeService
        # is done: give it ours, so LogLevel and LogFormat apply (--logger wins).
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver, None) is None:
            parent.setComponent(ILogObserver, make_observer(self.config.log_level, self.config.log_format))
        super().setServiceParent(parent)

    def startService(self) -> None:
        super().startService()
        for note in self.config.notes:
            log.info("{note}", note=note)
        log.info(
            "athens-py {version} serving {storage} storage on {endpoint}",
            version=__version__,
            storage=self.storage.name,
            endpoint=self.endpoint,
            root=self.config.disk_root if self.storage.name == "disk" else None,
        )

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        await super().stopService()
        await self.storage.close()
