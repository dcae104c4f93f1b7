"""Registers ``twistd athens`` and ``twist athens``; the import of athens stays lazy."""

from twisted.application.service import ServiceMaker

athens = ServiceMaker(
    "athens-py Go module proxy",
    "athens.tap",
    "A Go module proxy (GOPROXY) compatible with Athens",
    "athens",
)
