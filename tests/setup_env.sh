#!/usr/bin/env bash
# Everything the tests and the demo need on a fresh Linux machine with Python 3.11:
# redis-server (apt-get, when run as root), a virtualenv with the pack's
# dependencies and extras (test, local model, RocketMQ; llama-cpp-python builds
# from source the first time, about 10 minutes on 2 cores), and a real ComfyUI
# 0.3.75 (tests/harness/comfyui_harness.py).
# Idempotent: a second run checks and returns in seconds.
# Source it; afterwards $TC_PYTHON is the interpreter to use.
set -euo pipefail

TC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TC_CACHE="${TWITTERCHAT_CACHE:-$HOME/.cache/comfyui-twitterchat}"
TC_VENV="${TWITTERCHAT_VENV:-$TC_CACHE/venv}"
TC_BASE_PYTHON="${TWITTERCHAT_BASE_PYTHON:-$(command -v python3.11 || command -v python3)}"
export TWITTERCHAT_CACHE="$TC_CACHE"

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing redis-server with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "setup: redis-server is missing; install it (e.g. sudo apt-get install redis-server)" >&2
    exit 1
  fi
fi
# A real browser for the page tests: Debian's chromium and its matching driver
# (browsers that download their own build cannot install here).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium and chromium-driver with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "setup: chromium/chromedriver are missing; install them (e.g. sudo apt-get install chromium chromium-driver)" >&2
    exit 1
  fi
fi
# The Debian package starts a system-wide redis on port 6379; the tests start
# their own on free ports and never use that one.

if [ ! -x "$TC_VENV/bin/python" ]; then
  echo "setup: creating virtualenv $TC_VENV"
  "$TC_BASE_PYTHON" -m venv "$TC_VENV"
fi
TC_PYTHON="$TC_VENV/bin/python"

# The embedded model's runtime, built for any x86-64 CPU with AVX2 rather than for this one
# (-march=native): a native build of llama.cpp 0.3.36 crashed in its first decode on a CPU
# with AVX-512 and AMX. Built once into $TC_CACHE/wheels and installed before the rest,
# so pip keeps it (it satisfies the `local` extra's range).
LLAMA_SPEC="llama-cpp-python==0.3.36"
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
llama_key="$(printf '%s %s' "$LLAMA_SPEC" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-16)"
if [ "$(cat "$TC_VENV/.twitterchat-llama" 2>/dev/null)" != "$llama_key" ]; then
  llama_wheels="$TC_CACHE/wheels/llama-$llama_key"
  if ! ls "$llama_wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "setup: building $LLAMA_SPEC for AVX2 CPUs (about 10 minutes on 2 cores, once)"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$TC_PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps \
      --no-cache-dir -w "$llama_wheels.partial" "$LLAMA_SPEC"
    rm -rf "$llama_wheels" && mv "$llama_wheels.partial" "$llama_wheels"
  fi
  "$TC_PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall \
    "$llama_wheels"/llama_cpp_python-*.whl
  echo "$llama_key" > "$TC_VENV/.twitterchat-llama"
fi

stamp="$TC_VENV/.twitterchat-deps"
want="$(cat "$TC_ROOT/pyproject.toml" "$TC_ROOT/requirements.txt" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the pack's dependencies and the test, local-model and RocketMQ extras"
  # Dependencies only, read from pyproject.toml: the pack itself is loaded from
  # this checkout (by ComfyUI from custom_nodes/, by the tests from the root).
  "$TC_PYTHON" - "$TC_ROOT/pyproject.toml" > "$TC_VENV/.twitterchat-requirements.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
print("\n".join(project["dependencies"] + extras["test"] + extras["local"] + extras["rocketmq"]))
PY
  "$TC_PYTHON" -m pip install --quiet --disable-pip-version-check -r "$TC_VENV/.twitterchat-requirements.txt"
  echo "$want" > "$stamp"
fi

echo "setup: ComfyUI at $("$TC_PYTHON" "$TC_ROOT/tests/harness/comfyui_harness.py" provision | tail -n 1)"
export TC_ROOT TC_PYTHON
