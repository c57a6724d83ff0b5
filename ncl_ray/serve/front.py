"""The public face of a search service that listens beyond loopback: a small reverse proxy in the `ncl-ray serve`
process, on `--host:--port`, in front of Ray Serve's HTTP proxy, which then listens on 127.0.0.1 only.

Ray Serve's proxy answers `/-/routes` and `/-/healthz` itself, before any application (and so before our
guard), and Ray Serve 2.60 has no setting to turn them off. Beyond loopback this front answers `/-/routes`
(and every other `/-/` path) with 404 and forwards the rest, `/-/healthz` included (a liveness probe that says
"success" and nothing else), unchanged: method, path and query, every header as sent (a duplicated Host stays
duplicated for the guard to refuse), the body, and the response streamed back with its status and headers
(byte ranges included).

    front = Front("0.0.0.0", 8000, upstream_port=internal)   # starts serving in a thread
    front.stop()
"""

import asyncio
import threading
from typing import Optional

from ncl_ray.serve.guard import repeated_header

HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
       "transfer-encoding", "upgrade"}  # hop-by-hop headers (RFC 9110 7.6.1): never forwarded
LIVENESS = "/-/healthz"


class Front:
    """Serve (host, port) in a background thread, forwarding to 127.0.0.1:upstream_port."""

    def __init__(self, host: str, port: int, upstream_port: int, max_body: int = 1 << 20):
        self.host, self.port, self.upstream = host, port, f"http://127.0.0.1:{upstream_port}"
        self.max_body = max_body
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="ncl-ray-front", daemon=True)
        self.thread.start()
        self.ready.wait(30)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as e:  # a port in use: reported by the constructor
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        import aiohttp
        from aiohttp import web

        # a new upstream connection per request: a pooled one that the upstream closed while idle (uvicorn's
        # keep-alive is 5 s) would fail the next request forwarded on it
        self.session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None),
                                             connector=aiohttp.TCPConnector(force_close=True))
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()

    async def _forward(self, request):
        from aiohttp import web

        if request.path.startswith("/-/") and request.path != LIVENESS:
            return web.json_response({"error": "no such page", "field": "path"}, status=404)
        twice = repeated_header(name.decode("latin-1") for name, _ in request.raw_headers)
        if twice:  # forwarding would merge them: refused here, as the guard refuses them
            return web.json_response({"error": f"the {twice} header is given more than once", "field": twice},
                                     status=400)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
        body = await request.read() if request.body_exists else None
        import aiohttp

        try:
            upstream = await self.session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                                  data=body, allow_redirects=False)
        except aiohttp.ClientError:
            return web.json_response({"error": "the search service is not answering", "field": "server"},
                                     status=502)
        async with upstream as up:
            response = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() not in HOP and k.lower() != "content-length":
                    response.headers.add(k, v)
            if up.content_length is not None:
                response.content_length = up.content_length
            await response.prepare(request)
            async for chunk in up.content.iter_chunked(1 << 16):
                await response.write(chunk)
            await response.write_eof()
            return response

    def stop(self) -> None:
        async def close():
            await self.runner.cleanup()
            await self.session.close()

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
