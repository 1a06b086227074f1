"""Running the app with uvicorn: in the foreground (the CLI, clean shutdown on SIGTERM/SIGINT) or on a
background thread (tests, benchmarks, notebooks).

The listening socket is bound before the model loads (`bind`), so a busy port fails in a second, not
after minutes of loading weights. Websocket messages are capped at twice the request limit by the
transport; between the limit and the cap a message gets an error frame that says so.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from prismatic.serve.config import ServeConfig

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one. Clear error when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port or --host"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Any, config: ServeConfig) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        ws="websockets-sansio",
        ws_max_size=2 * config.max_request_bytes + (1 << 20),
        log_level=config.log_level,
        access_log=False,  # websocket URLs may carry ?token=; the app logs what matters without it
        timeout_graceful_shutdown=30,
        lifespan="on",
    )


def run(app: Any, config: ServeConfig, sock: socket.socket | None = None) -> None:
    """Serve until SIGTERM or SIGINT: stop accepting, finish in-flight requests, stop the batcher."""
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, config))
    server.run(sockets=[sock or bind(config.host, config.port)])


class BackgroundServer:
    """The app served by uvicorn on a daemon thread; `.url`, `.port`, `.close()`; a context manager."""

    def __init__(self, app: Any, config: ServeConfig, start_timeout_s: float = 60.0) -> None:
        import uvicorn

        self.host = config.host
        sock = bind(config.host, config.port)
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn_config(app, config))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name="prismatic-serve")  # fmt: skip
        self.thread.start()
        deadline = time.monotonic() + start_timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the policy server did not start on {self.host}:{self.port}")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]

    def close(self, timeout_s: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
