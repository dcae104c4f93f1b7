"""athens-py: a Go module proxy on Twisted."""

__version__ = "0.1.0"
