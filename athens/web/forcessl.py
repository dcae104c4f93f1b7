"""
``ForceSSL``: a request that did not arrive over HTTPS is sent there, as Athens does.

Behind a load balancer that ends TLS, a request counts as HTTPS when it says
``X-Forwarded-Proto: https`` (the header Athens trusts); otherwise it gets
301 to the same target on ``https://`` and the same host.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from athens.web.responses import text

HEADER = b"x-forwarded-proto"


def arrived_over_https(request: IRequest) -> bool:
    return bool(request.isSecure()) or request.getHeader(HEADER) == b"https"


class ForceSSL(Resource):
    isLeaf = True

    def __init__(self, inner: IResource) -> None:
        super().__init__()
        self.inner = inner

    def render(self, request: IRequest) -> bytes:
        if arrived_over_https(request):
            return self.inner.render(request)  # type: ignore[no-any-return]
        host = request.getHeader(b"host") or b""
        location = b"https://" + host + request.uri
        request.setHeader(b"location", location)
        return text(request, "moved permanently: this proxy answers over HTTPS (ForceSSL)", 301)
