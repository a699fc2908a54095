"""The LLM layer after its split: profiles (the vision flag), image parts on the wire,
and the pool refusing to send an image to a profile that cannot see."""

from __future__ import annotations

import asyncio
import base64

import pytest

from comfyui_twitterchat.utils.llm import (ImagePart, LLMClientPool, LLMConfigError, LLMProfile, LLMRequest,
                                           LLMSettings, chat_arguments, resolve_profile)
from comfyui_twitterchat.utils.settings import ConfigError
from openai_double import Faults, FakeOpenAIServer

PNG_1PX = "data:image/png;base64," + base64.b64encode(
    bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                  "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")).decode()


def settings(**profiles):
    return LLMSettings.load(config={"llm": {"profiles": profiles}}, env={})


def test_vision_defaults_true_for_openai_and_false_for_local():
    loaded = settings()
    assert resolve_profile("openai", loaded, env={}).sees_images is True
    assert resolve_profile("local", loaded, env={}).sees_images is False


def test_vision_is_set_in_config_and_by_environment():
    loaded = settings(text_only={"kind": "openai", "vision": False}, seeing={"kind": "openai", "vision": "true"})
    assert resolve_profile("text_only", loaded, env={}).sees_images is False
    assert resolve_profile("seeing", loaded, env={}).sees_images is True
    assert resolve_profile("openai", loaded, env={"OPENAI_VISION": "false"}).sees_images is False
    assert resolve_profile("text_only", loaded, env={"OPENAI_VISION": "1"}).sees_images is True
    with pytest.raises(LLMConfigError, match="OPENAI_VISION: expected true/false"):
        resolve_profile("openai", loaded, env={"OPENAI_VISION": "maybe"})


def test_a_local_profile_cannot_be_told_to_see():
    with pytest.raises(ConfigError, match=r"llm.profiles.mine.vision: the embedded model cannot see"):
        settings(mine={"kind": "local", "vision": True})
    with pytest.raises(ConfigError, match=r"llm.profiles.odd.vision: expected true/false"):
        settings(odd={"kind": "openai", "vision": "sometimes"})


def test_image_parts_become_image_url_content_parts():
    request = LLMRequest(system="s", prompt="describe", images=(ImagePart(PNG_1PX),))
    content = chat_arguments("gpt-4o-mini", request)["messages"][1]["content"]
    assert content == [{"type": "text", "text": "describe"},
                       {"type": "image_url", "image_url": {"url": PNG_1PX, "detail": "auto"}}]
    assert chat_arguments("gpt-4o-mini", LLMRequest(system="s", prompt="plain"))["messages"][1]["content"] == "plain"
    with pytest.raises(ValueError, match="data:image"):
        ImagePart("https://example.com/a.png")
    assert "base64" not in repr(ImagePart(PNG_1PX)).split("...")[1]  # a log line never carries the image


@pytest.fixture
def server():
    running = FakeOpenAIServer(Faults()).start()
    yield running
    running.stop()


def pool_with(server, vision):
    profile = LLMProfile(name="p", base_url=server.base_url, model="m", timeout=10, max_retries=0, vision=vision,
                         api_key_env="TWITTERCHAT_TEST_KEY")
    return LLMClientPool(max_concurrent=2, settings=LLMSettings(default_profile="p", profiles={"p": profile}))


def test_the_image_travels_over_http_to_a_vision_profile(server):
    request = LLMRequest(system="s", prompt="who is this", images=(ImagePart(PNG_1PX),))
    asyncio.run(pool_with(server, vision=True).complete("p", request))
    assert server.calls[0]["image_parts"] == [PNG_1PX]


def test_the_pool_refuses_images_for_a_profile_that_cannot_see(server):
    request = LLMRequest(system="s", prompt="who is this", images=(ImagePart(PNG_1PX),))
    with pytest.raises(LLMConfigError, match="cannot see images"):
        asyncio.run(pool_with(server, vision=False).complete("p", request))
    assert server.calls == []  # refused before anything was sent
