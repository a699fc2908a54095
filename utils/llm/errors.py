"""The classified LLM failures every caller catches."""

from __future__ import annotations


class LLMError(RuntimeError):
    """Base of the classified LLM failures."""


class LLMConfigError(LLMError):
    """The setup is wrong (no endpoint, bad key, unknown model): retrying will not help."""


class LLMTransientError(LLMError):
    """The endpoint kept failing after the SDK's own retries (rate limits, timeouts, 5xx)."""


class LLMContentError(LLMError):
    """An answer came back but cannot be used (bad JSON, too long, empty)."""
