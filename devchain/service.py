"""What the local services (anvil, redis-server, the HTTP chain servers) have in common: a free
port, the error for a binary that is not installed, ``with`` for start and stop, and how a
child process is ended."""

from __future__ import annotations

import socket
import subprocess
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class NotInstalled(RuntimeError):
    """A binary a local service runs is missing; the message says how to install it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def end_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Service(ABC):
    """``with Sub(...) as service:`` starts it and stops it again, whatever happens inside."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
