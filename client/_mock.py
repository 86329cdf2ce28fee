"""MockTransport: answer the client's requests from a function, for tests (like httpx's).

```python
def handler(request: Request) -> Response:
    return Response(200, {"content-type": "application/json"}, b'{"...": 1}')

client = AsyncClient("http://test", transport=MockTransport(handler))
```

A handler may be sync or async and may raise `TransportError` to play a network failure.
An optional `websocket` handler plays the server's side of each WebSocket the client opens.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from ._errors import TransportError
from ._transport import Request, Response, WebSocketConnection

__all__ = ["MockServerSocket", "MockTransport"]

Handler = Callable[[Request], Response | Awaitable[Response]]
WebSocketHandler = Callable[["MockServerSocket"], Awaitable[None]]

_CLOSED = object()


class MockServerSocket:
    """The server's end of one mock WebSocket: what the client sent, and a way to answer."""

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.url = url
        self.headers = dict(headers)
        self.close_code: int | None = None
        self._to_server: asyncio.Queue[object] = asyncio.Queue()
        self._to_client: asyncio.Queue[object] = asyncio.Queue()

    async def receive_json(self) -> Any:
        """The client's next message, decoded; None once the client closed."""
        item = await self._to_server.get()
        return None if item is _CLOSED else msgspec.json.decode(str(item))

    async def send_json(self, message: Any) -> None:
        """Send one message to the client."""
        if self.close_code is None:
            self._to_client.put_nowait(msgspec.json.encode(message).decode())

    async def close(self, code: int = 1000) -> None:
        """Close the socket from the server's side."""
        if self.close_code is None:
            self.close_code = code
            self._to_client.put_nowait(_CLOSED)
            self._to_server.put_nowait(_CLOSED)


class _ClientSide:
    def __init__(self, server: MockServerSocket) -> None:
        self._server = server

    async def send(self, text: str) -> None:
        if self._server.close_code is not None:
            raise TransportError("mock websocket is closed")
        self._server._to_server.put_nowait(text)

    async def receive(self) -> str | None:
        item = await self._server._to_client.get()
        if item is _CLOSED:
            self._server._to_client.put_nowait(_CLOSED)  # later calls see the close too
            return None
        return str(item)

    async def close(self) -> None:
        await self._server.close(1000)

    @property
    def close_code(self) -> int | None:
        return self._server.close_code


class MockTransport:
    """A transport whose server is a function. `websockets` lists every socket opened."""

    def __init__(self, handler: Handler, websocket: WebSocketHandler | None = None) -> None:
        self._handler = handler
        self._ws_handler = websocket
        self.websockets: list[MockServerSocket] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, request: Request) -> Response:
        result = self._handler(request)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def connect_websocket(self, url: str, headers: Mapping[str, str]) -> WebSocketConnection:
        if self._ws_handler is None:
            raise TransportError("MockTransport: no websocket handler")
        server = MockServerSocket(url, headers)
        self.websockets.append(server)
        task = asyncio.get_running_loop().create_task(self._serve(server, self._ws_handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return _ClientSide(server)

    @staticmethod
    async def _serve(server: MockServerSocket, handler: WebSocketHandler) -> None:
        try:
            await handler(server)
        finally:
            await server.close(1000)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
