"""A real redis-server on 127.0.0.1 and a free port, stopped by pid. Persistence is off unless
``appendonly=True`` (AOF, as the scale-out deployment runs it); ``kill()`` and ``start()`` again
give a crash and a restart on the same port and data directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from comfyui_harness import free_port


def redis_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    def __init__(self, work_dir: Path, port: int | None = None, appendonly: bool = False,
                 appendfsync: str = "always") -> None:
        self.work_dir = Path(work_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync  # tests: every write on disk; deployments: everysec
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes" if self.appendonly else "no",
             "--appendfsync", self.appendfsync, "--dir", str(self.work_dir), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9: the server stops with no chance to save anything more."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
