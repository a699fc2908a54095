"""OpenAI-compatible endpoints: the request as ``chat.completions`` arguments, the
clients (kept in one background event loop of their own: a client is bound to
the loop it runs in, keeps its connections across prompts, and is never left
behind on a closed loop), and the mapping of the SDK's errors onto
``LLMConfigError`` / ``LLMTransientError`` / ``LLMContentError``.

Transient failures (429, 5xx, timeouts, connection errors) are retried by the
openai SDK itself (``max_retries``, ``timeout``): there is no second retry layer.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from typing import Any, Mapping

from .errors import LLMConfigError, LLMContentError, LLMTransientError
from .profiles import LLMProfile, api_key_for
from .request import LLMRequest

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


def user_content(request: LLMRequest) -> str | list[dict[str, Any]]:
    """The user message: plain text, or text plus ``image_url`` parts when the request has images."""
    if not request.images:
        return request.prompt
    return [{"type": "text", "text": request.prompt},
            *({"type": "image_url", "image_url": {"url": image.data_url, "detail": image.detail}}
              for image in request.images)]


def chat_arguments(model: str, request: LLMRequest) -> dict[str, Any]:
    """The chat.completions arguments for ``model``: ``max_completion_tokens`` (``max_tokens`` is
    deprecated, and refused by reasoning models), and for reasoning models (o-series, gpt-5) none
    of the sampling settings they refuse (temperature, stop)."""
    reasoning = is_reasoning_model(model)
    kwargs: dict[str, Any] = {
        "model": model, "messages": [{"role": "system", "content": request.system},
                                     {"role": "user", "content": user_content(request)}],
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


class OpenAIProvider:
    """The ``AsyncOpenAI`` clients, one per profile, all living in the client loop."""

    def __init__(self) -> None:
        self._clients: dict[LLMProfile, Any] = {}  # used only inside the client loop

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

    async def complete(self, profile: LLMProfile, request: LLMRequest) -> str:
        """Runs the call in the client loop and waits for it from the caller's loop."""
        future = asyncio.run_coroutine_threadsafe(self._call(profile, request), client_loop())
        return await asyncio.wrap_future(future)  # cancelling the caller cancels the call

    async def _call(self, profile: LLMProfile, request: LLMRequest) -> str:
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
