"""
HTTP over a plain socket, byte for byte: for requests no client library would
send (hostile paths, pipelining, HTTP/1.0) and for answers a client library
would hide (a missing chunked terminator, header spelling).
"""

from __future__ import annotations

import socket

import attrs


@attrs.frozen
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    #: False when the connection ended before the body did (a broken transfer).
    complete: bool


def exchange(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def request(method: str, path: str, headers: dict[str, str] | None = None, version: str = "HTTP/1.1") -> bytes:
    """One request's bytes; ``path`` is sent exactly as given."""
    headers = {"Host": "127.0.0.1", **(headers or {})}
    lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def get(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> RawResponse:
    """One request on its own connection (``Connection: close``)."""
    answers = parse(exchange(port, request(method, path, {"Connection": "close", **(headers or {})})),
                    head=method == "HEAD")
    assert len(answers) == 1, answers
    return answers[0]


def parse(data: bytes, head: bool | list[bool] = False) -> list[RawResponse]:
    """Every response in ``data``; ``head`` says which answered a HEAD (no body follows)."""
    out: list[RawResponse] = []
    while data:
        top, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"truncated head: {data[:200]!r}")
        lines = top.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        is_head = head[len(out)] if isinstance(head, list) else head
        if is_head or status in (204, 304):
            body, data, complete = b"", rest, True
        elif headers.get("transfer-encoding") == "chunked":
            body, data, complete = _dechunk(rest)
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body, data, complete = rest[:n], rest[n:], len(rest) >= n
        else:
            body, data, complete = rest, b"", True  # until the connection closed
        out.append(RawResponse(status, headers, body, complete))
        if not complete:
            break
    return out


def _dechunk(data: bytes) -> tuple[bytes, bytes, bool]:
    body = bytearray()
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return bytes(body), b"", False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            if not rest.startswith(b"\r\n"):
                return bytes(body), b"", False
            return bytes(body), rest[2:], True
        if len(rest) < size + 2:
            body += rest[:size]
            return bytes(body), b"", False
        body += rest[:size]
        data = rest[size + 2 :]
