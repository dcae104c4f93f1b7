"""HTTP: the GOPROXY protocol, operations endpoints and the Twisted site that serves them."""
