"""Profiles: which endpoint and model a node's ``llm_profile`` names, and its key.

``config.json``'s ``llm.profiles`` name an endpoint and a model; a node picks a
profile *name*. Keys come from the environment (``OPENAI_API_KEY`` or the
profile's ``api_key_env``) or the git-ignored ``secrets.json``, never from a
widget. ``auto`` uses the OpenAI-compatible endpoint when ``OPENAI_BASE_URL`` or
``OPENAI_API_KEY`` is set, else the embedded model.

``vision`` says whether a profile's model can see images: true by default for
``openai`` profiles, false for ``local`` (the embedded model is text only and
cannot be switched on); ``OPENAI_VISION`` overrides it for ``openai`` profiles.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..settings import PACK_ROOT, ConfigError, as_bool, as_float, as_int, load_config, section
from .errors import LLMConfigError

DEFAULT_MAX_CONCURRENT = 20
SECRETS_FILE = PACK_ROOT / "secrets.json"


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
    n_threads: int = 0                # local: CPU threads; 0 = half the cores (at least 1): llama.cpp's
                                      # threads spin in lock-step, so with every core taken a busy
                                      # machine (ComfyUI, other work) slows it down tenfold
    vision: bool | None = None        # None: true for openai profiles, false for local ones

    @property
    def sees_images(self) -> bool:
        return self.kind == "openai" if self.vision is None else self.vision


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
            as_int(f"llm.profiles.{name}.n_threads", profile.n_threads, 0, 256)
            if profile.vision is not None:
                profile = replace(profile, vision=as_bool(f"llm.profiles.{name}.vision", profile.vision))
            check_vision(profile, f"config.json llm.profiles.{name}.vision")
            profiles[name] = profile
        profiles.setdefault("openai", LLMProfile(name="openai"))
        profiles.setdefault("local", LLMProfile(name="local", kind="local"))
        return cls(default_profile=str(values.get("default_profile", "auto")),
                   max_concurrent=max_concurrent, profiles=profiles)


def check_vision(profile: LLMProfile, key: str) -> None:
    if profile.kind == "local" and profile.vision:
        raise ConfigError(f"{key}: the embedded model cannot see images; leave vision false for "
                          "'local' profiles")


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
        vision = profile.vision
        if env.get("OPENAI_VISION", "").strip():
            try:
                vision = as_bool("OPENAI_VISION", env["OPENAI_VISION"])
            except ConfigError as exc:
                raise LLMConfigError(str(exc)) from None
        profile = replace(profile, base_url=profile.base_url or env.get("OPENAI_BASE_URL", ""),
                          model=env.get("OPENAI_MODEL") or profile.model, vision=vision)
    return profile


def api_key_for(profile: LLMProfile, env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get(profile.api_key_env) or _secrets_file_key(profile)
