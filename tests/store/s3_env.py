"""A real S3 server for tests and benchmarks, and a counting proxy to put in front of it.

- :func:`moto_server` starts moto's S3 server on a free port of 127.0.0.1 (in this process,
  or in a child process so that a benchmark's proxy and readers do not share its GIL) with
  one bucket, and stops it on exit.
- :func:`serve_ranges_in_place` makes that server answer a range GET by reading only the
  range, as real S3 does (moto itself reads the whole object for every range GET); every
  server started here has it, whatever system reads from it.
- :class:`CountingProxy` is a small HTTP/1.1 forwarding proxy on 127.0.0.1: point a
  client's ``endpoint_url`` at it and it forwards every request to the server, counting
  the requests and the response-body bytes it delivers per object key and in total. Range
  GETs pass through untouched (the count is what the client received: the range, not the
  object). It can add a fixed latency per request and cap the bandwidth of all
  connections together, so that the network is not free; it stops itself after
  ``lifetime`` seconds if nobody stops it. Other processes (a benchmark's ranks) read its
  counts with :func:`fetch_traffic`: ``GET <proxy>/__traffic__`` answers them as JSON.

Both are context managers and neither downloads anything: tests and ``benchmarks/`` import
this module (``tests/store`` is on pytest's path; benchmarks add it to ``sys.path``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "BUCKET",
    "TRAFFIC_PATH",
    "CountingProxy",
    "S3Server",
    "Traffic",
    "fetch_traffic",
    "free_port",
    "moto_server",
    "serve_ranges_in_place",
]

BUCKET = "epochal-test"
TRAFFIC_PATH = "/__traffic__"  # answered by the proxy itself; no S3 bucket can be named so
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are not forwarded;
# Expect is answered by the proxy itself, Content-Length is recomputed for bodies it reads.
_HOP_BY_HOP = frozenset(
    [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    ]
)
_CHUNK = 64 << 10  # bytes written to a client at a time: the granularity of the bandwidth cap


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, *, timeout: float, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the S3 server exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the S3 server did not listen on 127.0.0.1:{port} within {timeout} s")


_RANGE_IN_PLACE = threading.local()  # set while a simple range GET is being answered
# query keys of a GET that answer something else than (a range of) the object's bytes
_SUBRESOURCES = frozenset(["uploadId", "acl", "tagging", "legal-hold", "attributes", "partNumber"])


class _KeyBytes:
    """A moto key's bytes that read only what is sliced (moto's range answer slices them)."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def __len__(self) -> int:
        return int(self.key.contentsize)

    def __getitem__(self, part: slice) -> bytes:
        start, stop, step = part.indices(len(self))
        if step != 1:
            raise ValueError("only contiguous slices of a key's bytes are read in place")
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return bytes(self.key._value_buffer.read(max(0, stop - start)))


def _simple_range(header: str | None) -> bool:
    """``bytes=a-b`` (a <= b) or ``bytes=a-``: the ranges moto answers by slicing the value."""
    if not header or not header.startswith("bytes=") or "," in header:
        return False
    first, _, last = header.removeprefix("bytes=").partition("-")
    if not first.isdigit() or not (last == "" or last.isdigit()):
        return False
    return last == "" or int(first) <= int(last)


def serve_ranges_in_place() -> None:
    """Make moto's S3 answer a range GET at a cost of O(range), not O(object), as S3 does.

    moto 5 answers every GET by copying the object's whole value out of its buffer (a temp
    file for objects above ~5 MiB) and then slicing the range out of the copy, so each
    range GET of a block of an 8 MiB shard costs a read of 8 MiB in the server: the local
    server, not the link, bounds a reader that makes many small range requests (measured:
    ~1.3-2 ms of the server's ~5.5-7 ms of CPU per GET). This patch changes only that read:
    while a GET with one plain ``bytes=a-b`` / ``bytes=a-`` range (no sub-resource, no
    partNumber) is answered, the key's value is a view whose slice reads just those bytes
    from the same buffer under the key's lock; status, headers (Content-Range, ETag, ...)
    and errors are moto's own. Idempotent; applied by :func:`moto_server` and by the remote
    benchmark's server, so every system reads from the same server.
    """
    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response

    if getattr(S3Response, "_epochal_ranges_in_place", False):
        return
    whole_value = FakeKey.value
    answer_get = S3Response._key_response_get

    def value(self: Any) -> Any:
        if getattr(_RANGE_IN_PLACE, "on", False):
            return _KeyBytes(self)
        return whole_value.fget(self)

    def key_response_get(self: Any, query: dict[str, Any], key_name: str) -> Any:
        headers = self.headers
        header = headers.get("range") or headers.get("Range")
        _RANGE_IN_PLACE.on = not (query.keys() & _SUBRESOURCES) and _simple_range(header)
        try:
            return answer_get(self, query, key_name)
        finally:
            _RANGE_IN_PLACE.on = False

    FakeKey.value = property(value, whole_value.fset)  # type: ignore[method-assign]
    S3Response._key_response_get = key_response_get  # type: ignore[method-assign]
    S3Response._epochal_ranges_in_place = True  # type: ignore[attr-defined]


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A running S3 server: its endpoint and ready-made fsspec storage options."""

    endpoint_url: str
    bucket: str

    @property
    def options(self) -> dict[str, Any]:
        """``storage_options`` for ``epochal.open``/``write`` and ``s3fs.S3FileSystem``."""
        return {"endpoint_url": self.endpoint_url, "key": "testing", "secret": "testing"}

    def url(self, name: str) -> str:
        """``s3://<bucket>/<name>``."""
        return f"s3://{self.bucket}/{name}"


@contextlib.contextmanager
def moto_server(*, bucket: str = BUCKET, in_process: bool = True) -> Iterator[S3Server]:
    """Run moto's S3 server on a free port of 127.0.0.1 with ``bucket`` created.

    Args:
        bucket: the bucket to create.
        in_process: run the server in a thread of this process (tests); False runs it in a
            child process, so that heavy reading through a proxy in this process does not
            share one GIL with the server (benchmarks).

    Yields:
        the server. AWS credential variables are set (moto accepts any) while it runs and
        restored afterwards.
    """
    import s3fs

    saved = {k: os.environ.get(k) for k in _CREDENTIALS}
    os.environ.update(_CREDENTIALS)
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    server: Any = None
    try:
        if in_process:
            from moto.server import ThreadedMotoServer

            serve_ranges_in_place()
            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
        else:
            here = os.path.dirname(os.path.abspath(__file__))
            child = (
                f"import sys; sys.path.insert(0, {here!r}); import s3_env; "
                "s3_env.serve_ranges_in_place(); import moto.server; moto.server.main()"
            )
            cmd = [sys.executable, "-c", child, "-H", "127.0.0.1", "-p", str(port)]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(port, timeout=180, proc=proc)  # importing moto takes long
        s3 = S3Server(endpoint_url=f"http://127.0.0.1:{port}", bucket=bucket)
        s3fs.S3FileSystem(**s3.options, skip_instance_cache=True).mkdir(bucket)
        yield s3
    finally:
        if server is not None:
            server.stop()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclasses.dataclass(frozen=True)
class Traffic:
    """Requests and response-body bytes the proxy delivered (for one key, or in total)."""

    requests: int = 0
    bytes: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.requests + other.requests, self.bytes + other.bytes)


def fetch_traffic(endpoint_url: str, prefix: str = "") -> Traffic:
    """GET bytes and requests a running proxy (maybe another process's) delivered under ``prefix``."""
    parts = urllib.parse.urlsplit(endpoint_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request("GET", f"{TRAFFIC_PATH}?prefix={urllib.parse.quote(prefix)}")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{endpoint_url} answered {response.status} to {TRAFFIC_PATH}")
    finally:
        conn.close()
    counts = json.loads(body)
    return Traffic(requests=counts["requests"], bytes=counts["bytes"])


class _Link:
    """A shared bandwidth cap: every byte sent through any connection takes its turn."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free_at = 0.0  # monotonic time at which the link is idle again

    def send(self, nbytes: int, rate: float | None) -> None:
        if not rate:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.free_at)
            self.free_at = start + nbytes / rate
            done = self.free_at
        time.sleep(max(0.0, done - time.monotonic()))


def _object_key(path: str) -> str:
    """``bucket/key`` of a path-style request target, without the query."""
    return urllib.parse.unquote(urllib.parse.urlsplit(path).path).lstrip("/")


class CountingProxy:
    """An HTTP forwarding proxy on 127.0.0.1 that counts what it delivers; see the module doc.

    Args:
        upstream: the server's base URL (``http://127.0.0.1:port``).
        latency: seconds added before forwarding each request (the round trip the network
            would cost). May be changed while the proxy runs.
        bandwidth: cap in bytes per second of all response bodies together; None for no cap.
            May be changed while the proxy runs.
        lifetime: seconds after which the proxy stops by itself (a forgotten proxy must not
            outlive its test or benchmark).
    """

    def __init__(
        self,
        upstream: str,
        *,
        latency: float = 0.0,
        bandwidth: float | None = None,
        lifetime: float = 900.0,
    ) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.latency = latency
        self.bandwidth = bandwidth
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        self._link = _Link()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> CountingProxy:
        """Listen on a free port of 127.0.0.1 and serve in background threads."""
        if self._server is not None:
            raise RuntimeError("the proxy is already running")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        serve = threading.Thread(target=self._server.serve_forever, name="s3-proxy", daemon=True)
        timer = threading.Timer(self.lifetime, self.stop)
        timer.daemon = True
        self._threads = [serve, timer]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for thread in self._threads:
            if isinstance(thread, threading.Timer):
                thread.cancel()

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the proxy serves."""
        return self._server is not None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running proxy."""
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def options(self) -> dict[str, Any]:
        """fsspec ``storage_options`` that read through the proxy."""
        return {"endpoint_url": self.endpoint_url, "key": "testing", "secret": "testing"}

    # ------------------------------------------------------------------ counts
    def _count(self, method: str, key: str, *, requests: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            entry = self._counts[(method, key)]
            entry[0] += requests
            entry[1] += nbytes

    def traffic(self, prefix: str = "", *, method: str | None = "GET") -> Traffic:
        """Requests and body bytes delivered for keys starting with ``prefix``.

        Args:
            prefix: ``bucket/key`` prefix (e.g. ``epochal-test/store1/shards/``); "" for all.
            method: only requests of this HTTP method; None for every method.
        """
        total = Traffic()
        for key, traffic in self.per_key(method=method).items():
            if key.startswith(prefix):
                total += traffic
        return total

    def per_key(self, *, method: str | None = "GET") -> dict[str, Traffic]:
        """``{bucket/key: Traffic}`` for every key requested with ``method`` (None: any)."""
        out: dict[str, Traffic] = defaultdict(Traffic)
        with self._lock:
            for (m, key), (requests, nbytes) in self._counts.items():
                if method is None or m == method:
                    out[key] += Traffic(requests, nbytes)
        return dict(out)

    def reset(self) -> None:
        """Forget every count (e.g. after writing a store through the proxy)."""
        with self._lock:
            self._counts.clear()

    # ------------------------------------------------------------------ forwarding
    def _pace(self, nbytes: int) -> None:
        self._link.send(nbytes, self.bandwidth)


def _handler_for(proxy: CountingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_Forward):
        pass

    Handler.proxy = proxy
    return Handler


class _Forward(BaseHTTPRequestHandler):
    """Forwards one client connection's requests (keep-alive) over one upstream connection."""

    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
    proxy: CountingProxy
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request otherwise

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _send_upstream(
        self, body: bytes | None, headers: dict[str, str]
    ) -> http.client.HTTPResponse:
        for attempt in range(2):  # a kept-alive upstream connection may have been closed
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(*self.proxy.upstream, timeout=120)
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                return self._upstream.getresponse()
            except (ConnectionError, http.client.HTTPException):
                self._upstream.close()
                self._upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _answer_traffic(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        traffic = self.proxy.traffic(query.get("prefix", [""])[0])
        body = json.dumps(dataclasses.asdict(traffic)).encode()
        self.send_response_only(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        if self.command == "GET" and urllib.parse.urlsplit(self.path).path == TRAFFIC_PATH:
            self._answer_traffic()
            return
        key = _object_key(self.path)
        body = self._read_body()
        if self.proxy.latency > 0:
            time.sleep(self.proxy.latency)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        self.proxy._count(self.command, key, requests=1)
        try:
            response = self._send_upstream(body, headers)
        except OSError as err:
            self.send_error(502, f"upstream failed: {err}")
            return
        self.send_response_only(response.status, response.reason)
        length = response.getheader("Content-Length")
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200:
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            response.read()
            return
        if length is None:  # unknown length upstream: buffer it, so the client gets one
            data = response.read()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self._write(key, memoryview(data))
            return
        self.send_header("Content-Length", length)
        self.end_headers()
        remaining = int(length)
        while remaining > 0:
            chunk = response.read(min(_CHUNK, remaining))
            if not chunk:
                self.close_connection = True  # upstream cut the body short: so does the client
                break
            remaining -= len(chunk)
            self._write(key, memoryview(chunk))

    def _write(self, key: str, data: memoryview) -> None:
        for start in range(0, len(data), _CHUNK):
            piece = data[start : start + _CHUNK]
            self.proxy._pace(len(piece))
            self.wfile.write(piece)
            self.proxy._count(self.command, key, nbytes=len(piece))

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            pass  # the client went away: nothing to forward to
        finally:
            if self._upstream is not None:
                self._upstream.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward
