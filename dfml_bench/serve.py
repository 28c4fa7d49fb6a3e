"""Serve a built API pool over HTTP (``dfml-bench pool serve``).

Server library: the standard library's :class:`http.server.ThreadingHTTPServer`. It adds no
dependency, its blocking handlers suit the blocking torch forward pass they wrap, a thread
per connection is plenty for a benchmark's few clients, and it is bound to loopback by
default. It speaks no TLS: to offer a pool beyond one machine, put it behind a reverse proxy
that terminates TLS (and keep ``--token``).

Endpoints (errors answer JSON ``{"error": one sentence, "code": ...}``):

``GET /v1/apis``
    the listing: protocol, output mode, limits, the pool's datasets and, per API, its id,
    dataset, architecture, global class ids and names, input spec, images used and budget.
``POST /v1/apis/<api_id>/query``
    one endpoint per API. Body: a tensor frame of ``[B, 3, H, W]`` float32 images in [0, 1];
    answer: a frame of ``[B, K]`` float32 scores (logits or probs), or ``[B]`` int64 labels.

Tensor frames: :mod:`dfml_bench.wire` (shared with the ``http`` pool client).

Accounting: each API has its own server-side :class:`~dfml_bench.apis.QueryLedger` (with the
optional per-API budget). A request carries a client-chosen ``request_id``; answers are
remembered (the last :data:`ANSWER_CACHE` of them), and a retry with the same id gets the same
answer without being charged again, so a retry after a lost answer never double-counts.

Status codes: 400 malformed request (also: pixels outside [0, 1] or not finite, a ``request_id``
reused with other images); 401 missing or wrong token; 403 budget exhausted (code
``budget_exhausted``); 404 unknown path or API; 408 the body did not arrive in time; 411 / 413
body without length or too large; 414 / 431 request line or headers too long; 429 rate limited
(``Retry-After`` in whole seconds); 500 server error; 503 too many open connections. Every error,
including those ``http.server`` raises itself, answers JSON.

Resources: a connection idle for ``ServeLimits.idle_timeout_s`` (30 s) is closed, at most
``ServeLimits.max_connections`` are served at once (more are answered 503 and closed, without a
thread), and the listen backlog holds 1024 pending connections, so slow or abandoned
connections without a token cannot exhaust the server.

Fault injection (:class:`FaultPlan`, for tests of clients): a seeded fraction of requests is
dropped (connection closed without an answer, after charging), delayed (answered late, after
charging), refused with 429 or 500 (before charging) or answered with a malformed body (after
charging).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import random
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from dfml_bench.apis import QueryBudgetExhausted, QueryLedger
from dfml_bench.errors import ConfigError
# the wire format lives in dfml_bench.wire; its names stay importable from here
from dfml_bench.wire import (CONTENT_TYPE, DTYPES, MAX_HEADER, PROTOCOL, WireError, decode_frame,  # noqa: F401
                             decode_tensor, encode_frame, encode_tensor)

if TYPE_CHECKING:
    import numpy as np
    import torch

MAX_SIDE = 2048
ANSWER_CACHE = 4096
LISTEN_BACKLOG = 1024
FAULT_KINDS = ("drop", "delay", "429", "500", "malformed")
_QUERY_PATH = re.compile(r"^/v1/apis/([A-Za-z0-9._\-\[\]=,]+)/query$")


# ------------------------------------------------------------------------- server settings ---

@dataclasses.dataclass(frozen=True)
class ServeLimits:
    """What the server enforces per API: request size, request rate and query budget."""

    max_request_bytes: int = 64 << 20
    rate: float | None = None        # requests per second per API (token bucket); None: unlimited
    burst: int | None = None         # bucket size (default: max(1, rate))
    budget: int | None = None        # images each API answers in all; None: unlimited
    idle_timeout_s: float = 30.0     # a connection that sends nothing for this long is closed
    max_connections: int = 256       # connections served at once; more are answered 503

    def __post_init__(self) -> None:
        if not 0 < self.idle_timeout_s <= 3600:
            raise ConfigError(f"the idle timeout must be between 0 and 3600 seconds, not {self.idle_timeout_s}.")
        if not 1 <= self.max_connections <= 100_000:
            raise ConfigError(f"the connection limit must be between 1 and 100000, not {self.max_connections}.")
        if self.max_request_bytes < 1024:
            raise ConfigError(f"the request size limit must be >= 1 KiB, not {self.max_request_bytes} bytes.")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError(f"the rate limit must be > 0 requests per second, not {self.rate}.")
        if self.burst is not None and self.burst < 1:
            raise ConfigError(f"the burst must be >= 1 request, not {self.burst}.")
        if self.budget is not None and self.budget < 0:
            raise ConfigError(f"the per-API budget must be >= 0 images, not {self.budget}.")


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    """Misbehave on a seeded `fraction` of requests, each time with one of `kinds` (for tests)."""

    fraction: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = FAULT_KINDS
    delay_s: float = 1.0             # how late a "delay" fault answers

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"the fault fraction must be between 0 and 1, not {self.fraction}.")
        unknown = sorted(set(self.kinds) - set(FAULT_KINDS))
        if unknown or not self.kinds:
            raise ConfigError(f"unknown fault kind(s) {unknown or '(none given)'}; use some of {list(FAULT_KINDS)}.")
        if self.delay_s < 0:
            raise ConfigError(f"the fault delay must be >= 0 seconds, not {self.delay_s}.")


class _Bucket:
    """Token bucket: `rate` tokens per second, at most `burst` stored."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst, self.tokens, self.t = rate, burst, float(burst), time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclasses.dataclass
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any) -> _Answer:
    return _Answer(status, json.dumps({"error": message, "code": code, **extra}).encode(), headers=dict(headers or {}))


# ---------------------------------------------------------------------------------- server ---

class PoolServer:
    """Serves the black-box APIs of a built :class:`~dfml_bench.pool.APIPool` over HTTP.

    ``start()`` serves from a background thread (tests); ``serve_forever()`` blocks (the CLI).
    """

    def __init__(self, pool: Any, output: str = "logits", *, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, limits: ServeLimits | None = None, faults: FaultPlan | None = None,
                 log: Callable[[str], None] | None = None):
        self.pool, self.output, self.token = pool, output, token or None
        self.limits, self.faults, self.log = limits or ServeLimits(), faults or FaultPlan(), log
        self.ledgers = {e["api_id"]: QueryLedger(self.limits.budget) for e in pool.entries}
        self._index = {e["api_id"]: i for i, e in enumerate(pool.entries)}
        burst = self.limits.burst or max(1, int(self.limits.rate or 1))
        self._buckets = {a: _Bucket(self.limits.rate, burst) for a in self._index} if self.limits.rate else {}
        self._answers: OrderedDict[tuple[str, str], tuple[bytes, _Answer]] = OrderedDict()
        self._compute = threading.Lock()   # one forward pass at a time (and the answer cache)
        self._meta = threading.Lock()      # fault draws, buckets, counters
        self._rng = random.Random(self.faults.seed)
        self.requests = 0
        self.faults_injected: Counter[str] = Counter()
        self.retries_answered = 0          # requests answered from the cache (a client's retry)
        try:
            self._httpd = _Server((host, port), _Handler, self.limits.max_connections)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port "
                              "or --host.") from None
        self._httpd.app = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def usage(self) -> dict[str, int]:
        """Images charged per API so far (what the server counted)."""
        return {a: ledger.total for a, ledger in self.ledgers.items()}

    def start(self) -> PoolServer:
        """Serve in a background thread; a no-op when already serving (so ``with server.start():`` works)."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="dfml-pool-server",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> PoolServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- request handling (called from handler threads) --

    def draw_fault(self) -> str | None:
        with self._meta:
            self.requests += 1
            if self.faults.fraction <= 0 or self._rng.random() >= self.faults.fraction:
                return None
            kind = self._rng.choice(self.faults.kinds)
            self.faults_injected[kind] += 1
            return kind

    def authorised(self, header: str | None) -> bool:
        if self.token is None:
            return True
        expected = f"Bearer {self.token}".encode()
        return header is not None and hmac.compare_digest(header.encode(), expected)

    def listing(self) -> _Answer:
        apis = []
        for api_id, i in self._index.items():
            info, used = self.pool.info(i), self.ledgers[api_id].total
            apis.append({"api_id": api_id, "dataset": info.dataset, "architecture": info.architecture,
                         "classes": list(info.classes), "class_names": list(info.class_names),
                         "input_size": info.input_size, "output": self.output,
                         "input": {"dtype": "float32", "shape": ["B", 3, "H", "W"], "range": [0, 1],
                                   "resized_to": [info.input_size, info.input_size]},
                         "path": f"/v1/apis/{api_id}/query", "queries_used": used, "budget": self.limits.budget})
        body = {"protocol": PROTOCOL, "pool": getattr(self.pool.root, "name", ""), "output": self.output,
                "content_type": CONTENT_TYPE, "max_request_bytes": self.limits.max_request_bytes,
                "rate_per_api": self.limits.rate, "budget_per_api": self.limits.budget,
                "datasets": self.pool.manifest.get("datasets", []), "apis": apis}
        return _Answer(200, json.dumps(body).encode())

    def answer_query(self, api_id: str, body: bytes) -> _Answer:
        if api_id not in self._index:
            return _error(404, "unknown_api", f"there is no API '{api_id}'; GET /v1/apis lists them.")
        if self._buckets:
            with self._meta:
                wait = self._buckets[api_id].take()
            if wait > 0:
                return _error(429, "rate_limited", f"API '{api_id}' allows {self.limits.rate:g} requests per "
                              "second; retry after the Retry-After seconds.", {"Retry-After": str(math.ceil(wait))})
        try:
            header, array = decode_frame(body)
        except WireError as exc:
            return _error(400, "bad_frame", str(exc))
        rid, shape = header.get("request_id"), array.shape
        if not isinstance(rid, str) or not 0 < len(rid) <= 128:
            return _error(400, "bad_request_id", "the frame header needs a 'request_id' string of 1-128 characters.")
        if header["dtype"] != "float32" or len(shape) != 4 or shape[1] != 3 or shape[0] < 1 \
                or not (1 <= shape[2] <= MAX_SIDE and 1 <= shape[3] <= MAX_SIDE):
            return _error(400, "bad_input", f"an API takes float32 images of shape [B>=1, 3, H, W] with H, W <= "
                          f"{MAX_SIDE}, not {header['dtype']} {list(shape)}.")
        import numpy as np
        import torch

        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            return _error(400, "bad_pixels", "every pixel must be a finite number in [0, 1]; clamp the images "
                          "(and replace NaN or infinite values) before sending them.")
        # the cache answers a retry of the same request only: the same id and the same images
        digest = hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16,
                                 person=str(list(shape)).encode()[:16]).digest()
        key = (api_id, rid)
        with self._compute:
            cached = self._answers.get(key)
            if cached is not None:
                if cached[0] != digest:
                    return _error(400, "request_id_reused", f"request_id '{rid[:64]}' was already answered for "
                                  "other images; use a fresh request_id for every new request.")
                self._answers.move_to_end(key)
                self.retries_answered += 1
                return cached[1]
            ledger = self.ledgers[api_id]
            api = self.pool.api(self._index[api_id], ledger, output=self.output)
            images = torch.from_numpy(array.astype("=f4", copy=True))
            try:
                scores = api.query(images)
            except QueryBudgetExhausted as exc:
                return _error(403, "budget_exhausted", f"API '{api_id}' has answered {exc.used:,} of its "
                              f"{exc.budget:,}-image budget and cannot answer {exc.requested:,} more.",
                              used=exc.used, requested=exc.requested, budget=exc.budget)
            out = encode_tensor({"request_id": rid, "charged": int(shape[0]), "used": ledger.total,
                                 "budget": self.limits.budget}, scores)
            answer = _Answer(200, out, CONTENT_TYPE)
            self._answers[key] = (digest, answer)
            while len(self._answers) > ANSWER_CACHE:
                self._answers.popitem(last=False)
            return answer


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once, with a deep listen backlog."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True
    block_on_close = False  # keep no list of finished threads (it would grow with every connection)

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int):
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # full: answer at once, without a thread
            body = json.dumps({"error": "the server has too many open connections; retry in a moment.",
                               "code": "busy"}).encode()
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    server_version = "dfml-bench-pool"
    protocol_version = "HTTP/1.0"  # one request per connection: nothing to keep in sync

    def setup(self) -> None:
        self.timeout = self.app.limits.idle_timeout_s  # every read and write; idle connections are closed
        super().setup()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors raised by http.server itself (bad request line, 414, 431, 501) answer JSON too."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        text = {414: "the request line is too long; use a shorter path.",
                431: "the request headers are too large or too many; send fewer, shorter headers.",
                501: "this method is not supported; use GET /v1/apis or POST /v1/apis/<api_id>/query."}.get(
            code, f"{phrase.lower()}: {str(message or explain or 'malformed request')[:200]}; send a valid "
                  "HTTP/1.x request.")
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # an unparsed request line: answer with a status line anyway
        self._send(_error(code, phrase.lower().replace(" ", "_"), text))

    @property
    def app(self) -> PoolServer:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        if self.app.log is not None:
            self.app.log(f"{self.address_string()} {format % args}")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        app = self.app
        fault = app.draw_fault()
        if fault in ("429", "500"):
            self._drain()  # refused before anything is charged
            if fault == "429":
                return self._send(_error(429, "rate_limited", "injected fault: retry later.", {"Retry-After": "0"}))
            return self._send(_error(500, "injected", "injected fault: internal error."))
        answer = self._route(method)
        if fault == "drop":
            self.close_connection = True  # close without a byte of answer
            return None
        if fault == "delay":
            time.sleep(app.faults.delay_s)
        if fault == "malformed" and answer.status == 200:
            answer = _Answer(200, answer.body[: len(answer.body) // 2] + b"\x00garbage", answer.content_type)
        return self._send(answer)

    def _route(self, method: str) -> _Answer:
        app = self.app
        if not app.authorised(self.headers.get("Authorization")):
            return _error(401, "unauthorised", "this pool needs 'Authorization: Bearer <token>' with the "
                          "server's token.", {"WWW-Authenticate": "Bearer"})
        path = self.path.split("?", 1)[0]
        if method == "GET" and path == "/v1/apis":
            return app.listing()
        match = _QUERY_PATH.match(path)
        if method != "POST" or match is None:
            return _error(404, "not_found", f"no endpoint {method} {path}; use GET /v1/apis or "
                          "POST /v1/apis/<api_id>/query.")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            return _error(411, "length_required", "a query needs a Content-Length header.")
        if int(length) > app.limits.max_request_bytes:
            self.close_connection = True  # the body is not read
            return _error(413, "too_large", f"the request has {int(length):,} bytes, more than the server's limit "
                          f"of {app.limits.max_request_bytes:,}; send fewer images per request.")
        try:
            body = self.rfile.read(int(length))
        except TimeoutError:
            self.close_connection = True
            return _error(408, "timeout", f"the body did not arrive within {app.limits.idle_timeout_s:g} s of "
                          f"silence (Content-Length {int(length):,}); send as many bytes as Content-Length says.")
        if len(body) != int(length):
            self.close_connection = True
            return _error(400, "short_body", f"the body ended after {len(body)} of {length} bytes; send as many "
                          "bytes as Content-Length says.")
        try:
            return app.answer_query(match.group(1), body)
        except Exception as exc:  # a server bug must not kill the handler thread silently
            return _error(500, "server_error", f"the server failed on this request ({type(exc).__name__}: "
                          f"{str(exc)[:200]}).")

    def _drain(self) -> None:
        """Read and drop a request body within the size limit (so the client reads our answer)."""
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= self.app.limits.max_request_bytes:
            try:
                self.rfile.read(int(length))
            except TimeoutError:
                self.close_connection = True

    def _send(self, answer: _Answer) -> None:
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for k, v in answer.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client gave up on this attempt (it retries with the same id)
