"""One LLM call, as the tools describe it (``LLMRequest``), and the image parts it may carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class ImagePart:
    """An image sent with the prompt, as a base64 ``data:`` URL (an ``image_url`` content part).

    Only vision profiles receive one; the pool refuses a request with images for a
    profile that cannot see, so nothing pretends to have seen a picture."""

    data_url: str = ""
    detail: str = "auto"

    def __post_init__(self) -> None:
        if not self.data_url.startswith("data:image/"):
            raise ValueError("an image part must be a data:image/...;base64 URL")

    def __repr__(self) -> str:  # never a megabyte of base64 in a log line
        return f"ImagePart({self.data_url[:22]}..., {len(self.data_url)} chars)"


@dataclass(frozen=True)
class LineFields:
    """Lines whose structure the code lays down and the embedded model only fills in: each line
    is its label, then each field in turn, generated until a separator or a line break (a few
    short free-text calls that reuse the cached prompt prefix; grammar-constrained sampling
    over Gemma's 262k-token vocabulary costs about half a second per token on 2 cores). A
    field with nothing usable after a few tries takes its ``fallbacks`` value."""

    labels: tuple[str, ...]
    fields: tuple[tuple[str, int], ...]            # (name, at most this many characters)
    fallbacks: tuple[tuple[str, ...], ...] = ()    # per field: values to cycle through
    separator: str = " | "


@dataclass(frozen=True)
class LLMRequest:
    """One call. Chat endpoints get ``system`` + ``prompt`` (+ ``images`` on vision profiles); the
    embedded base model gets ``completion_prompt`` (few-shot text that the answer continues)."""

    system: str
    prompt: str
    completion_prompt: str = ""
    json_schema: Mapping[str, Any] | None = None
    schema_name: str = "answer"
    grammar: str | None = None        # GBNF for the embedded model (else one is built from json_schema)
    local_json_schema: Mapping[str, Any] | None = None  # a tighter schema for the embedded model's grammar
    max_tokens: int = 200
    temperature: float = 0.9
    seed: int | None = None
    stop: tuple[str, ...] = ()
    images: tuple[ImagePart, ...] = ()
    tag: str = ""                     # for logs only (e.g. the day being written)
    lines: LineFields | None = None   # the embedded model fills these lines (else free text or a grammar)
