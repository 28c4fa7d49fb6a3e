"""The `http` pool (APIs served by `dfml-bench pool serve`): parameters and registration (light:
no torch import). Implementation: `pool.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


def _url_check(value: str) -> str | None:
    return None if value.startswith(("http://", "https://")) else "must be an http:// or https:// URL"


@dataclass
class HttpPoolParams:
    url: str = param("http://127.0.0.1:8765", "base URL of a pool served by `dfml-bench pool serve`",
                     check=_url_check)
    token_env: str = param("", "environment variable holding the server's bearer token (empty: no token); "
                           "the token itself never goes into a config")
    timeout_s: float = param(30.0, "seconds one HTTP attempt may take", min=0, exclusive_min=True)
    deadline_s: float = param(300.0, "seconds one request may take with all its retries before the run fails",
                              min=0, exclusive_min=True)
    max_batch: int = param(4096, "most images per HTTP request (a query is split into requests)", min=1)
    backoff_s: float = param(0.1, "wait before the first retry; doubles per retry, with jitter", min=0)
    max_backoff_s: float = param(10.0, "longest wait between retries (a server's Retry-After may be longer)", min=0)


@hookimpl
def register_pools(register: Any) -> None:
    register("http", "dfml_plugins.pools.http.pool:HttpPool", params=HttpPoolParams,
             help="APIs served by `dfml-bench pool serve` (retries with backoff; each image counted once)")
