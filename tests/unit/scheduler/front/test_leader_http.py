"""The front's pass-through to the leader's HTTP port: to whichever address listens, with the
caller's headers, query and body, the leader's status and body back; clear errors otherwise."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi import FastAPI

from hashserve.local import free_port
from scheduler.api.openai.schema import ApiError
from scheduler.front.openai import LeaderHttp, leader_base_urls


class Leader(BaseHTTPRequestHandler):
    """Answers every request with what it received, as JSON."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        doc = {"method": self.command, "path": self.path, "body": body,
               "authorization": self.headers.get("authorization"),
               "idempotency_key": self.headers.get("idempotency-key")}
        raw = json.dumps(doc).encode()
        self.send_response(404 if self.path.endswith("/missing") else 200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def leader() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Leader)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def call(proxy: LeaderHttp, method: str, path: str, **kw: object) -> httpx.Response:
    app = FastAPI()
    proxy.routes(app)

    @app.exception_handler(ApiError)
    async def api_error(request: object, exc: ApiError) -> object:
        from fastapi.responses import JSONResponse
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://front") as c:
            try:
                return await c.request(method, path, **kw)  # type: ignore[arg-type]
            finally:
                await proxy.close()

    return asyncio.run(go())


def test_base_urls_take_addresses_or_urls() -> None:
    assert leader_base_urls("10.0.0.5:8001, https://b:8001/,", tls=False) == [
        "http://10.0.0.5:8001", "https://b:8001"]
    assert leader_base_urls("10.0.0.5:8001", tls=True) == ["https://10.0.0.5:8001"]
    assert leader_base_urls("", tls=False) == []


def test_a_request_goes_to_the_address_that_listens_with_its_headers_query_and_body(
    leader: str,
) -> None:
    standby = f"127.0.0.1:{free_port()}"  # nothing listens: a standby
    proxy = LeaderHttp(leader_base_urls(f"{standby},{leader}", tls=False))
    reply = call(proxy, "POST", "/v1/batches?limit=3", content=b'{"a": 1}',
                 headers={"authorization": "Bearer hs_k", "idempotency-key": "k1",
                          "x-other": "dropped"})
    assert reply.status_code == 200
    doc = reply.json()
    assert doc == {"method": "POST", "path": "/v1/batches?limit=3", "body": '{"a": 1}',
                   "authorization": "Bearer hs_k", "idempotency_key": "k1"}
    assert proxy._last == 1  # the next request tries the leader first


def test_the_leaders_status_comes_back_as_it_is(leader: str) -> None:
    reply = call(LeaderHttp([f"http://{leader}"]), "GET", "/v1/files/missing")
    assert reply.status_code == 404


def test_no_address_listening_is_a_503_naming_them() -> None:
    down = f"127.0.0.1:{free_port()}"
    reply = call(LeaderHttp(leader_base_urls(down, tls=False)), "GET", "/v1/usage")
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "1"
    assert down in reply.json()["error"]["message"]


def test_a_front_without_scheduler_http_says_where_the_batch_api_is() -> None:
    reply = call(LeaderHttp([]), "GET", "/v1/batches")
    assert reply.status_code == 404
    assert "--scheduler-http" in reply.json()["error"]["message"]
