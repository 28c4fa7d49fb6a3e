"""A served pool (`dfml-bench pool serve`) and the `http` pool plugin: exact answers, exact counts, faults."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dfml_bench.apis import QueryBudgetExhausted, QueryLedger
from dfml_bench.config import build_raw_config, component_params, resolve_runs
from dfml_bench.errors import AccessError, ConfigError
from dfml_bench.runner import Environment, build_scenario_by_name, execute_run, open_pool
from dfml_bench.serve import FAULT_KINDS, FaultPlan, PoolServer, ServeLimits
from dfml_bench.wire import CONTENT_TYPE, WireError, decode_frame, encode_frame, encode_tensor
from dfml_plugins.pools.http import HttpPoolParams
from dfml_plugins.pools.http import pool as http_pool
from dfml_plugins.pools.http.pool import HttpPool, RemoteAPIError, RemoteBudgetExhausted

CPU = torch.device("cpu")
FAST = {"timeout_s": 0.2, "backoff_s": 0.005, "max_backoff_s": 0.05, "deadline_s": 20.0}


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The smoke SS scenario and its built pool (the pool every server here serves)."""
    from dfml_bench.plugins import load_registry

    registry = load_registry(strict=True)
    pool_dir = tmp_path_factory.mktemp("pools")
    raw = build_raw_config("smoke", flags={"scenario": "SS"})
    s_name, params = component_params(raw, "scenario", registry)
    env = Environment(Path("unused"), device="cpu", pool_dir=pool_dir, workers=1)
    data = build_scenario_by_name(registry, s_name, params, env, seed=0)
    pool = open_pool(data, registry, env, CPU)
    yield registry, data, pool, pool_dir
    pool.close()


@pytest.fixture
def serve(local):
    servers = []

    def start(**kwargs) -> PoolServer:
        servers.append(PoolServer(local[2], **kwargs).start())
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def client(local, server: PoolServer, **params) -> HttpPool:
    return HttpPool(HttpPoolParams(url=server.url, **{**FAST, **params}), local[1], CPU)


def images(n: int, seed: int = 0, size: int = 28) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def expected(local, index: int, x: torch.Tensor, output: str = "logits") -> torch.Tensor:
    return local[2].api(index, QueryLedger(), output=output).query(x)


def raw_request(server: PoolServer, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


# ------------------------------------------------------------------------------- wire format ---

def test_frames_round_trip_and_malformed_frames_are_refused() -> None:
    for array in (np.random.rand(2, 3, 4, 4).astype(np.float32), np.arange(5, dtype=np.int64),
                  np.arange(6, dtype=np.uint8).reshape(2, 3)):
        header, back = decode_frame(encode_frame({"request_id": "r"}, array))
        assert header["request_id"] == "r" and back.dtype == array.dtype and np.array_equal(back, array)
    good = encode_frame({}, np.zeros((2, 2), np.float32))
    for bad, words in ((b"", "at least 4 bytes"), (good[:-1], "takes 16 bytes"), (b"\xff\xff\x00\x00xx", "header length"),
                       (len(b"[1]").to_bytes(4, "little") + b"[1]", "JSON object"),
                       (good.replace(b"float32", b"float64"), "dtype")):
        with pytest.raises(WireError, match=words):
            decode_frame(bad)


# --------------------------------------------------------------------------- serving basics ---

def test_listing_and_answers_equal_the_local_pool_and_every_count_agrees(local, serve) -> None:
    server = serve()
    pool = client(local, server)
    assert len(pool) == len(local[2]) == 3
    status, _, body = raw_request(server, "GET", "/v1/apis")
    listing = json.loads(body)
    assert status == 200 and listing["output"] == "logits" and listing["protocol"] == 1
    for i, entry in enumerate(listing["apis"]):
        assert pool.info(i) == local[2].info(i)
        assert entry["input"]["dtype"] == "float32" and entry["path"] == f"/v1/apis/{entry['api_id']}/query"
        assert len(entry["class_names"]) == 5
    ledger = QueryLedger()
    api = pool.api(1, ledger)
    x = images(7)
    assert torch.equal(api.query(x), expected(local, 1, x))  # bitwise: float32 both ways, same batch
    assert torch.equal(api.query(x[:2]), expected(local, 1, x[:2]))
    api_id = pool.info(1).api_id
    assert ledger.per_api == pool.counts == {api_id: 9} and server.usage()[api_id] == 9
    with pytest.raises(AccessError, match="black-box APIs only"):
        pool.api(0, ledger, white_box=True)
    with pytest.raises(ConfigError, match="answers 'logits'.*set the scenario's output"):
        pool.api(0, ledger, output="label")


def test_label_output_and_queries_split_by_the_request_size_limit(local, serve) -> None:
    server = serve(output="label", limits=ServeLimits(max_request_bytes=64 << 10))
    pool = client(local, server)
    ledger = QueryLedger()
    x = images(12, size=32)  # 12 KiB per image: 5 per request under 64 KiB
    labels = pool.api(0, ledger, output="label").query(x)
    assert labels.dtype == torch.int64 and torch.equal(labels, expected(local, 0, x, "label"))
    assert pool.requests == 3 and ledger.total == server.usage()[pool.info(0).api_id] == 12


def test_token_size_limit_and_bad_requests_get_clear_statuses(local, serve, monkeypatch) -> None:
    server = serve(token="s3cret", limits=ServeLimits(max_request_bytes=4096))
    with pytest.raises(RemoteAPIError, match="HTTP 401.*token_env"):
        client(local, server)
    monkeypatch.setenv("POOL_TOKEN", "s3cret")
    pool = client(local, server, token_env="POOL_TOKEN")
    assert len(pool) == 3
    with pytest.raises(ConfigError, match=r"\$UNSET_TOKEN, which is not set"):
        client(local, server, token_env="UNSET_TOKEN")
    auth = {"Authorization": "Bearer s3cret"}
    api_id = pool.info(0).api_id
    path = f"/v1/apis/{api_id}/query"
    assert raw_request(server, "GET", "/v1/apis", headers={"Authorization": "Bearer wrong"})[0] == 401
    good = encode_tensor({"request_id": "a"}, images(1, size=8))
    assert raw_request(server, "POST", path, good, auth)[0] == 200
    for body, status, code in ((b"junk", 400, "bad_frame"),
                               (encode_tensor({"request_id": "b"}, torch.rand(1, 1, 8, 8)), 400, "bad_input"),
                               (encode_tensor({}, images(1, size=8)), 400, "bad_request_id"),
                               (encode_tensor({"request_id": "c"}, images(1, size=40)), 413, "too_large")):
        got, _, answer = raw_request(server, "POST", path, body, auth)
        assert (got, json.loads(answer)["code"]) == (status, code)
    got, _, answer = raw_request(server, "POST", "/v1/apis/nope/query", good, auth)
    assert got == 404 and "GET /v1/apis lists them" in json.loads(answer)["error"]
    assert server.usage()[api_id] == 1  # only the good request was charged


def test_rate_limit_answers_429_with_retry_after_and_the_client_waits(local, serve) -> None:
    server = serve(limits=ServeLimits(rate=1.0, burst=1))
    pool = client(local, server)
    api_id = pool.info(2).api_id
    path = f"/v1/apis/{api_id}/query"
    assert raw_request(server, "POST", path, encode_tensor({"request_id": "x"}, images(1)))[0] == 200
    status, headers, _ = raw_request(server, "POST", path, encode_tensor({"request_id": "y"}, images(1)))
    assert status == 429 and headers["Retry-After"] == "1"
    ledger = QueryLedger()
    t0 = time.monotonic()
    x = images(3)
    assert torch.equal(pool.api(2, ledger).query(x), expected(local, 2, x))
    assert time.monotonic() - t0 >= 0.5  # held back by Retry-After, not by its 5 ms backoff
    assert server.usage()[api_id] == 1 + ledger.total == 4


def test_server_budget_is_a_clear_403_and_stops_like_a_run_budget(local, serve) -> None:
    server = serve(limits=ServeLimits(budget=10))
    pool = client(local, server)
    ledger = QueryLedger()
    api = pool.api(0, ledger)
    api.query(images(6))
    with pytest.raises(QueryBudgetExhausted, match="answered 6 of its 10-image budget") as info:
        api.query(images(6))
    assert isinstance(info.value, RemoteBudgetExhausted) and info.value.budget == 10
    assert ledger.total == pool.counts[api.api_id] == server.usage()[api.api_id] == 6  # the refused 6 refunded


# ---------------------------------------------------------------------------- faults ---

@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_is_retried_and_charged_once(local, serve, kind: str) -> None:
    server = serve(faults=FaultPlan(fraction=0.5, seed=3, kinds=(kind,), delay_s=0.4))
    pool = client(local, server)
    ledger = QueryLedger()
    for i in range(8):
        x = images(2 + i, seed=i)
        assert torch.equal(pool.api(i % 3, ledger).query(x), expected(local, i % 3, x))
    assert server.faults_injected[kind] >= 2
    if kind in ("drop", "delay", "malformed"):  # charged, then the answer was lost: the retry is not re-charged
        assert server.retries_answered >= 1
    assert ledger.per_api == pool.counts == {k: v for k, v in server.usage().items() if v}
    assert ledger.total == sum(range(2, 10))


def test_gives_up_at_the_deadline_with_one_sentence_and_refunds(local, serve) -> None:
    server = serve()
    pool = client(local, server, deadline_s=0.4)
    server.faults = FaultPlan(fraction=1.0, kinds=("500",))
    ledger = QueryLedger()
    # the last attempt gets only what is left of the deadline, so on a loaded machine it may time out
    with pytest.raises(RemoteAPIError, match=r"gave no valid answer within the 0.4 s deadline \(\d+ attempts, "
                                             r"the last: (HTTP 500|TimeoutError: timed out)\)") as info:
        pool.api(0, ledger).query(images(4))
    assert server.faults_injected["500"] >= 1
    assert "\n" not in str(info.value) and ledger.total == 0 and sum(server.usage().values()) == 0
    server.close()
    with pytest.raises(RemoteAPIError, match="ConnectionRefusedError"):
        client(local, server, deadline_s=0.2)


# ------------------------------------------------------------------------ BiDf-MKD end to end ---

def _bidf_run(local, tmp_path: Path, name: str, url: str | None) -> dict:
    registry, _, _, pool_dir = local
    sets = ["scenario.access=black", "train.meta_iterations=2", "train.val_episodes=2", "recoverer.generator.width=16",
            "eval.episodes=3"]
    if url is not None:  # at most 6 images per request: many requests, so many faults
        sets.append("scenario.SS.pool={kind: http, url: '%s', max_batch: 6, timeout_s: 0.3, backoff_s: 0.005, "
                    "max_backoff_s: 0.05}" % url)
    resolved = resolve_runs(build_raw_config("smoke", sets=sets, flags={"method": "bidf_mkd"}), registry)[0]
    env = Environment(tmp_path / name, device="cpu", pool_dir=pool_dir, workers=1)
    return execute_run(resolved, registry, env)


def test_bidf_mkd_through_a_server_failing_20_percent_matches_a_healthy_one(local, serve, tmp_path,
                                                                            monkeypatch) -> None:
    clients: list[HttpPool] = []

    class Recording(HttpPool):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            clients.append(self)

    monkeypatch.setattr(http_pool, "HttpPool", Recording)
    healthy = serve()
    faulty = serve(faults=FaultPlan(fraction=0.2, seed=0, delay_s=0.5))
    results = [_bidf_run(local, tmp_path, "healthy", healthy.url), _bidf_run(local, tmp_path, "faulty", faulty.url)]
    assert sum(faulty.faults_injected.values()) >= 8 and len(faulty.faults_injected) >= 3
    assert sum(healthy.faults_injected.values()) == 0
    for key in ("accuracy", "ci95", "per_dataset", "best_val_accuracy", "best_iteration", "queries", "apis_queried"):
        assert results[1][key] == results[0][key], key
    for result, server, pool in zip(results, (healthy, faulty), clients):
        assert result["queries"] == sum(pool.counts.values()) == sum(server.usage().values()) > 0
        assert pool.counts == {k: v for k, v in server.usage().items() if v}
    logged = [json.loads(line)["queries"] for line in
              next((tmp_path / "faulty" / "runs").iterdir()).joinpath("metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == results[1]["queries"]
    assert clients[1].attempts > clients[1].requests + 1  # it did retry


# --------------------------------------------------------------------------- config and CLI ---

def test_scenario_pool_settings_are_validated(local) -> None:
    registry = local[0]
    for value, words in (("{kind: ftp}", "unknown pool 'ftp'"), ("{url: 'http://x'}", "needs a 'kind'"),
                         ("{kind: http, url: 'ftp://x'}", "must be an http:// or https:// URL"),
                         ("{kind: http, timeout: 3}", "has no parameter 'timeout'.*timeout_s")):
        raw = build_raw_config("smoke", sets=[f"scenario.SS.pool={value}"], flags={"scenario": "SS"})
        with pytest.raises(ConfigError, match=words):
            params = component_params(raw, "scenario", registry)[1]
            build_scenario_by_name(registry, "SS", params, Environment(Path("unused")), seed=0)


def test_a_pool_built_on_other_datasets_is_refused(local, serve) -> None:
    split = type("Split", (), {"num_classes": 12})()
    other = type("Scenario", (), {"name": "mine", "datasets": [
        type("Dataset", (), {"name": "glyphs-symbols", "split": lambda self, which: split})()]})()
    with pytest.raises(ConfigError, match=r"was built on datasets \[\('glyphs-letters', \d+\)\], but scenario 'mine'"):
        HttpPool(HttpPoolParams(url=serve().url, **FAST), other, CPU)


def test_cli_pool_serve_lists_its_apis(local, monkeypatch) -> None:
    from click.testing import CliRunner

    from dfml_bench.cli import main

    seen = {}

    def serve_once(self: PoolServer) -> None:  # instead of blocking: start, ask for the listing, return
        self.start()
        seen["listing"] = json.loads(raw_request(self, "GET", "/v1/apis", headers={"Authorization": "Bearer t0k"})[2])
        seen["limits"], seen["url"] = self.limits, self.url

    monkeypatch.setattr(PoolServer, "serve_forever", serve_once)
    res = CliRunner().invoke(main, ["pool", "serve", "--profile", "smoke", "--pool-dir", str(local[3]), "--port", "0",
                                    "--device", "cpu", "--rate", "5", "--budget", "1e4", "--no-progress"],
                             env={"DFML_BENCH_POOL_TOKEN": "t0k"})
    assert res.exit_code == 0, res.output
    assert f"serving 3 APIs of pool {local[2].root.name} (logits) at {seen['url']}" in res.output
    assert seen["url"].startswith("http://127.0.0.1:") and len(seen["listing"]["apis"]) == 3
    assert seen["listing"]["content_type"] == CONTENT_TYPE
    assert seen["limits"] == ServeLimits(rate=5.0, budget=10000) and seen["listing"]["budget_per_api"] == 10000
    bad = CliRunner().invoke(main, ["pool", "serve", "--profile", "smoke", "--pool-dir", str(local[3]), "--port", "0",
                                    "--fail-fraction", "2"])
    assert bad.exit_code == 2 and "fault fraction must be between 0 and 1" in bad.output


def test_pool_build_on_a_served_pool_scenario_says_there_is_nothing_to_build() -> None:
    from click.testing import CliRunner

    from dfml_bench.cli import main

    res = CliRunner().invoke(main, ["pool", "build", "--profile", "smoke", "--no-progress",
                                    "--set", "scenario.SS.pool={kind: http, url: 'http://127.0.0.1:9'}"])
    assert res.exit_code != 0 and "nothing to build here" in res.output, res.output
    assert "Traceback" not in res.output


# ------------------------------------------------- hostile clients: bounded time, threads, answers ---

def _connect(server: PoolServer, timeout: float = 5.0):
    import socket

    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def _read_all(sock) -> bytes:
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _json_answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head, head
    return status, json.loads(body)


def test_a_body_shorter_than_its_content_length_is_answered_408_and_closed(local, serve) -> None:
    server = serve(limits=ServeLimits(idle_timeout_s=0.5))
    api_id = local[2].entries[0]["api_id"]
    with _connect(server) as sock:
        sock.sendall(f"POST /v1/apis/{api_id}/query HTTP/1.0\r\nContent-Length: 100000\r\n\r\n".encode() + b"x" * 10)
        t0 = time.monotonic()
        status, answer = _json_answer(_read_all(sock))
    assert status == 408 and answer["code"] == "timeout" and time.monotonic() - t0 < 4
    assert server.usage()[api_id] == 0


def test_authenticated_clients_are_answered_while_200_slow_connections_are_open(local, serve, monkeypatch) -> None:
    server = serve(token="t0k", limits=ServeLimits(idle_timeout_s=2.0))
    slow = []
    try:
        for _ in range(200):  # unauthenticated, headers never finished
            sock = _connect(server)
            sock.sendall(b"POST /v1/apis/x/query HTTP/1.0\r\nX-Slow: ")
            slow.append(sock)
        monkeypatch.setenv("POOL_TOKEN", "t0k")
        t0 = time.monotonic()
        pool = client(local, server, token_env="POOL_TOKEN", deadline_s=5.0)
        x = images(3, seed=7)
        for i in range(3):
            assert torch.equal(HttpPool.query(pool, pool.info(i).api_id, x, lambda n: None), expected(local, i, x))
        assert time.monotonic() - t0 < 3.0
        # idle connections are closed by the server (without an answer) once they stay silent
        for sock in slow[:5]:
            sock.settimeout(5.0)
            assert _read_all(sock) == b""
    finally:
        for sock in slow:
            sock.close()


def test_connections_beyond_the_cap_get_a_json_503_without_a_thread(local, serve) -> None:
    server = serve(limits=ServeLimits(max_connections=4, idle_timeout_s=5.0))
    held = [_connect(server) for _ in range(4)]
    try:
        for sock in held:
            sock.sendall(b"GET /v1/apis HTTP/1.0\r\n")  # unfinished
        time.sleep(0.2)
        with _connect(server) as sock:
            status, answer = _json_answer(_read_all(sock))
        assert status == 503 and answer["code"] == "busy"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # slots come back once the held connections close
        try:
            if raw_request(server, "GET", "/v1/apis")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.05)
    else:
        pytest.fail("the server did not recover its connection slots")


def test_hostile_frames_are_refused_with_400_and_never_charged(local, serve) -> None:
    server = serve()
    api_id = local[2].entries[0]["api_id"]
    path = f"/v1/apis/{api_id}/query"
    deep = b"[" * 30000 + b"]" * 30000
    frame = len(deep).to_bytes(4, "little") + deep
    status, _, body = raw_request(server, "POST", path, frame)
    assert status == 400 and json.loads(body)["code"] == "bad_frame", body
    for value in (float("nan"), float("inf"), -0.5, 1.5):
        x = images(2)
        x[1, 0, 3, 3] = value
        status, _, body = raw_request(server, "POST", path, encode_tensor({"request_id": f"v{value}"}, x))
        assert status == 400 and json.loads(body)["code"] == "bad_pixels", (value, body)
    assert server.usage()[api_id] == 0
    # a request id answers only a retry of the same images; reusing it for others is refused
    first = encode_tensor({"request_id": "same"}, images(2, seed=1))
    assert raw_request(server, "POST", path, first)[0] == 200
    status, _, body = raw_request(server, "POST", path, encode_tensor({"request_id": "same"}, images(2, seed=2)))
    assert status == 400 and json.loads(body)["code"] == "request_id_reused"
    assert raw_request(server, "POST", path, first)[0] == 200 and server.retries_answered == 1
    assert server.usage()[api_id] == 2


def test_errors_raised_by_http_server_itself_answer_json(local, serve) -> None:
    server = serve()
    cases = [(b"GET /" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n", 414),
             (b"GET /v1/apis HTTP/1.0\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431),
             (b"PUT /v1/apis HTTP/1.0\r\n\r\n", 501),
             (b"GARBAGE\r\n\r\n", 400),
             (b"GET /nowhere HTTP/1.0\r\n\r\n", 404)]
    for request, code in cases:
        with _connect(server) as sock:
            sock.sendall(request)
            status, answer = _json_answer(_read_all(sock))
        assert status == code and answer["error"].endswith(".") and len(answer["error"]) < 300, (code, answer)


def test_a_started_server_used_as_a_context_manager_serves_once_and_closes(local) -> None:
    import threading

    before = threading.active_count()
    with PoolServer(local[2]).start() as server:  # start() then __enter__: one serving thread, not two
        assert threading.active_count() == before + 1
        assert torch.equal(client(local, server).api(0, QueryLedger()).query(images(2)), expected(local, 0, images(2)))
    assert threading.active_count() == before  # close() returned: the thread is gone
