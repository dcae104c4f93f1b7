"""HTTP basic auth (``BasicAuthUser``/``BasicAuthPass``) in front of everything but the health checks."""

from __future__ import annotations

import hmac

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from athens.web.responses import text

#: Load balancers and orchestrators probe these without credentials.
EXEMPT = (b"/healthz", b"/readyz")


class BasicAuth(Resource):
    isLeaf = True

    def __init__(self, inner: IResource, user: str, password: str, path_prefix: str = "") -> None:
        super().__init__()
        self.inner = inner
        self.user, self.password = user.encode(), password.encode()
        self.exempt = tuple(path_prefix.encode() + p for p in EXEMPT)

    def render(self, request: IRequest) -> bytes:
        if request.path in self.exempt or self._allowed(request):
            return self.inner.render(request)  # type: ignore[no-any-return]
        request.setHeader(b"www-authenticate", b'Basic realm="athens-py"')
        return text(request, "unauthorized: this proxy needs a user and password (in GOPROXY or .netrc)", 401)

    def _allowed(self, request: IRequest) -> bool:
        # Compare both, always, in constant time: no hint of which one was wrong.
        user_ok = hmac.compare_digest(request.getUser(), self.user)
        password_ok = hmac.compare_digest(request.getPassword(), self.password)
        return user_ok and password_ok
