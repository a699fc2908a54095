"""One LLM layer for every node: an OpenAI-compatible endpoint or the embedded model.

Where each part lives (one hop from here):

- ``profiles``: ``LLMProfile`` / ``LLMSettings`` from config.json and the
  environment, ``auto``, the ``vision`` flag, keys from the environment or
  ``secrets.json``.
- ``request``: ``LLMRequest`` (one call) and ``ImagePart`` (an image as a base64 part).
- ``errors``: ``LLMConfigError`` (fix the setup), ``LLMTransientError`` (gave up
  after the SDK's retries), ``LLMContentError`` (an unusable answer; callers ask
  again a bounded number of times).
- ``cross_loop``: ``CrossLoopSemaphore``, the one bound on LLM calls across event loops.
- ``openai_provider``: chat arguments, the strict-schema subset, the clients'
  background loop, error mapping.
- ``local_provider``: the embedded GGUF model (assembly, loading, grammar).
- ``pool``: ``LLMClientPool`` / ``get_pool()``: the bound, the provider, logs and metrics.
"""

from .cross_loop import CrossLoopSemaphore
from .errors import LLMConfigError, LLMContentError, LLMError, LLMTransientError
from .local_provider import LocalModel, packaged_model_path
from .openai_provider import chat_arguments, client_loop, is_reasoning_model, strict_schema
from .pool import LLMClientPool, add_call_observer, get_pool
from .profiles import DEFAULT_MAX_CONCURRENT, LLMProfile, LLMSettings, api_key_for, resolve_profile
from .request import ImagePart, LLMRequest

__all__ = ["CrossLoopSemaphore", "DEFAULT_MAX_CONCURRENT", "ImagePart", "LLMClientPool", "LLMConfigError",
           "LLMContentError", "LLMError", "LLMProfile", "LLMRequest", "LLMSettings", "LLMTransientError",
           "LocalModel", "add_call_observer", "api_key_for", "chat_arguments", "client_loop", "get_pool",
           "is_reasoning_model", "packaged_model_path", "resolve_profile", "strict_schema"]
