# Run with: twistd -ny athens.tac   (configuration: ./athens.toml and ATHENS_* variables)
from twisted.application import service
from twisted.internet import reactor
from twisted.logger import ILogObserver

from athens.config import load
from athens.logs import make_observer
from athens.service import AthensService
from athens.storage.factory import open_storage

config = load()
application = service.Application("athens")
application.setComponent(ILogObserver, make_observer(config.log_level, config.log_format))
AthensService(config, open_storage(config), config.listen_endpoint(), reactor).setServiceParent(application)
