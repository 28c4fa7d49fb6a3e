"""The `http` pool: black-box APIs served by ``dfml-bench pool serve`` (see docs/http-pools.md).

A query is charged to the run's ledger once, split into requests of at most ``max_batch``
images (and the server's request size limit), and each request is retried on timeouts,
connection errors, malformed answers, 429 and 5xx with exponential backoff and jitter,
waiting at least the server's ``Retry-After``, until ``deadline_s``. A retry reuses its
request id, so the server charges it once too. Images of a query that was never answered
(the deadline passed, the server's budget ran out) are refunded to the ledger.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import torch

from dfml_bench.apis import APIInfo, BlackBoxAPI, QueryBudgetExhausted, QueryLedger
from dfml_bench.errors import AccessError, ConfigError, DfmlError
from dfml_bench.serve import CONTENT_TYPE, PROTOCOL, WireError, decode_tensor, encode_tensor
from dfml_plugins.pools.http import HttpPoolParams


class RemoteAPIError(DfmlError):
    """A served pool did not give a valid answer (refused, or no answer before the deadline)."""


class RemoteBudgetExhausted(QueryBudgetExhausted):
    """The server's budget for an API is spent; the run stops as at its own budget."""

    def __init__(self, message: str, used: int, requested: int, budget: int):
        DfmlError.__init__(self, message)
        self.used, self.requested, self.budget = used, requested, budget


class _Retry(Exception):
    """A transient failure of one attempt: what happened and the server's Retry-After, if any."""

    def __init__(self, what: str, retry_after: float | None = None):
        super().__init__(what)
        self.what, self.retry_after = what, retry_after


class HttpPool:
    """A pool of remote black-box APIs: the same interface as :class:`dfml_bench.pool.APIPool`."""

    def __init__(self, params: HttpPoolParams, scenario: Any, device: torch.device):
        self.p, self.device = params, device
        self.url = params.url.rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        self._https, self._netloc, self._prefix = parts.scheme == "https", parts.netloc, parts.path
        self._token = None
        if params.token_env:
            self._token = os.environ.get(params.token_env)
            if not self._token:
                raise ConfigError(f"pool.token_env names ${params.token_env}, which is not set; export the "
                                  "server's token in it.")
        self._rng = random.Random()  # jitter only: it never changes what is computed
        self.counts: dict[str, int] = {}   # images answered per API (= what the server charged)
        self.requests = 0                  # logical requests answered
        self.attempts = 0                  # HTTP attempts, retries included
        listing = self._call("GET", "/v1/apis", None, "the API listing", _listing)
        if listing["protocol"] != PROTOCOL:
            raise RemoteAPIError(f"the pool at {self.url} speaks protocol {listing['protocol']!r}, not "
                                 f"{PROTOCOL}; use the same dfml-bench version on both sides.")
        self.output = str(listing["output"])
        self.max_request_bytes = int(listing["max_request_bytes"])
        self._infos: list[APIInfo] = listing["infos"]
        self._check_datasets(listing, scenario)

    def _check_datasets(self, listing: dict[str, Any], scenario: Any) -> None:
        served = listing["datasets"]
        ours = [(d.name, d.split("train").num_classes) for d in scenario.datasets]
        if served != ours:
            raise ConfigError(f"the pool at {self.url} was built on datasets {served}, but scenario "
                              f"'{scenario.name}' uses {ours}; serve this scenario's pool or fix its datasets.")

    # -- the APIPool interface --

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, index: int) -> APIInfo:
        return self._infos[index]

    def api(self, index: int, ledger: QueryLedger, *, output: str = "logits", white_box: bool = False) -> BlackBoxAPI:
        """A query-only handle of API `index` charging `ledger`."""
        if white_box:
            raise AccessError(f"the pool at {self.url} serves black-box APIs only; use a black-box method or "
                              "a local pool for white-box access.")
        if output != self.output:
            raise ConfigError(f"the pool at {self.url} answers '{self.output}', but the scenario asks for "
                              f"'{output}'; set the scenario's output to '{self.output}'.")
        return HttpAPI(self._infos[index], self, ledger, output)

    def close(self) -> None:
        """Nothing to release: every request uses its own connection."""

    # -- requests --

    def query(self, api_id: str, images: torch.Tensor, answered: Callable[[int], None]) -> torch.Tensor:
        """Scores for `images`, in requests of at most the batch and size limits; `answered(n)` per request."""
        per_image = 4 * images[0].numel()
        batch = max(1, min(self.p.max_batch, (self.max_request_bytes - 4096) // per_image))
        # an API takes images: the server refuses values outside [0, 1] (a perturbed image is clamped here)
        x = images.detach().to("cpu", torch.float32)
        if not torch.isfinite(x).all():
            raise DfmlError(f"API '{api_id}' was asked about images with NaN or infinite pixels; the method's "
                            "images diverged (lower its learning rates).")
        x = x.clamp(0.0, 1.0)
        parts = []
        for start in range(0, x.shape[0], batch):
            chunk = x[start:start + batch]
            rid = uuid.uuid4().hex  # the same id on every retry: the server charges the request once
            body = encode_tensor({"request_id": rid}, chunk)
            parts.append(self._call("POST", f"/v1/apis/{api_id}/query", body, f"API '{api_id}'",
                                    lambda data, n=chunk.shape[0], rid=rid: self._scores(data, rid, n)))
            self.counts[api_id] = self.counts.get(api_id, 0) + chunk.shape[0]
            self.requests += 1
            answered(chunk.shape[0])
        return torch.cat(parts).to(images.device)

    def _scores(self, data: bytes, rid: str, n: int) -> torch.Tensor:
        header, scores = decode_tensor(data)
        if header.get("request_id") != rid:
            raise WireError(f"the answer is for request {header.get('request_id')!r}, not {rid!r}.")
        dtype = "int64" if self.output == "label" else "float32"
        if header["dtype"] != dtype or scores.shape[0] != n or scores.dim() != (1 if dtype == "int64" else 2):
            raise WireError(f"expected {n} {dtype} answers, got {header['dtype']} {list(scores.shape)}.")
        return scores

    def _call(self, method: str, path: str, body: bytes | None, what: str, parse: Callable[[bytes], Any]) -> Any:
        """One logical request: attempts with backoff until a valid answer, a refusal or the deadline."""
        deadline = time.monotonic() + self.p.deadline_s
        attempt = 0
        while True:
            attempt += 1
            self.attempts += 1
            try:
                status, headers, data = self._send(method, path, body, max(0.001, min(
                    self.p.timeout_s, deadline - time.monotonic())))
                if status == 200:
                    try:
                        return parse(data)
                    except (WireError, ValueError) as exc:
                        raise _Retry(f"a malformed answer ({exc})") from None
                if status == 429 or status >= 500:
                    raise _Retry(f"HTTP {status}", _retry_after(headers.get("retry-after")))
                raise self._refused(status, data, what)
            except _Retry as exc:
                last, retry_after = exc.what, exc.retry_after
            except (OSError, http.client.HTTPException) as exc:  # timeouts, refused, reset, dropped
                last, retry_after = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, None
            pause = min(self.p.max_backoff_s, self.p.backoff_s * 2 ** (attempt - 1)) * (0.5 + 0.5 * self._rng.random())
            if retry_after is not None:
                pause = max(pause, retry_after)
            if time.monotonic() + pause >= deadline:
                raise RemoteAPIError(f"{what} at {self.url} gave no valid answer within the {self.p.deadline_s:g} s "
                                     f"deadline ({attempt} attempts, the last: {last}); check the server or raise "
                                     "the pool's deadline_s.")
            time.sleep(pause)

    def _send(self, method: str, path: str, body: bytes | None, timeout: float) -> tuple[int, dict[str, str], bytes]:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._netloc, timeout=timeout)
        headers = {"Content-Type": CONTENT_TYPE, "Accept": f"{CONTENT_TYPE}, application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            conn.request(method, self._prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()

    def _refused(self, status: int, data: bytes, what: str) -> DfmlError:
        try:
            error = json.loads(data)
            message, code = str(error["error"]), str(error.get("code", ""))
        except (ValueError, KeyError, TypeError):
            error, message, code = {}, data[:200].decode(errors="replace"), ""
        if status == 403 and code == "budget_exhausted":
            return RemoteBudgetExhausted(f"the server's query budget is exhausted: {message}", int(error["used"]),
                                         int(error["requested"]), int(error["budget"]))
        if status == 401:
            return RemoteAPIError(f"the pool at {self.url} refused the request (HTTP 401: {message}); set the "
                                  "pool's token_env to a variable holding the server's --token.")
        return RemoteAPIError(f"the pool at {self.url} refused {what} (HTTP {status}: {message})")


class HttpAPI(BlackBoxAPI):
    """A remote black-box API: ``query`` sends the images to the server; no model is held here."""

    __slots__ = ("_pool",)

    def __init__(self, info: APIInfo, pool: HttpPool, ledger: QueryLedger, output: str):
        super().__init__(info, 0, ledger, output)  # token 0: no local model behind this handle
        self._pool = pool

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Scores for a batch of [0,1] images; charged once, refunded for what was never answered."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise DfmlError(f"an API takes images of shape [B, 3, H, W], not {tuple(images.shape)}.")
        n = int(images.shape[0])
        if n == 0:  # nothing to send
            label = self.output == "label"
            return torch.empty((0,) if label else (0, self.num_classes), device=images.device,
                               dtype=torch.int64 if label else torch.float32)
        self._ledger.charge(self.info.api_id, n)
        done = [0]

        def answered(k: int) -> None:
            done[0] += k

        try:
            return self._pool.query(self.info.api_id, images, answered)
        except BaseException:
            self._ledger.refund(self.info.api_id, n - done[0])
            raise

    def __repr__(self) -> str:
        return f"HttpAPI({self.info.api_id} at {self._pool.url}, classes={list(self.info.classes)}, output={self.output})"


def _listing(data: bytes) -> dict[str, Any]:
    """The API listing's fields, with an APIInfo per API; ValueError if it is malformed."""
    try:
        listing = json.loads(data)
        return {"protocol": listing["protocol"], "output": str(listing["output"]),
                "max_request_bytes": int(listing["max_request_bytes"]),
                "datasets": [(str(d["name"]), int(d["meta_train_classes"])) for d in listing["datasets"]],
                "infos": [APIInfo(str(a["api_id"]), str(a["dataset"]), str(a["architecture"]),
                                  tuple(int(c) for c in a["classes"]), tuple(str(c) for c in a["class_names"]),
                                  int(a["input_size"])) for a in listing["apis"]]}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"the listing lacks or garbles {exc}") from None


def _retry_after(value: str | None) -> float | None:
    """Seconds of a Retry-After header (delay-seconds; an HTTP date counts from now)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
