"""Fetchers fill the cache from an origin: the VCS through the go command, or an upstream proxy."""
