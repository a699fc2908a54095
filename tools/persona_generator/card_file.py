"""Saving the card: ``<user_id>.json`` and ``<user_id>.png``, a PNG card whose ``chara``
**tEXt** chunk holds the card's JSON in base64 (SillyTavern reads only tEXt), both
written atomically."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from ...utils.file_lock import atomic_write_bytes, atomic_write_json

CARD_CHUNK = "chara"


def png_card_bytes(image, card: dict[str, Any]) -> bytes:
    """``image`` as a PNG with the card in a ``chara`` tEXt chunk (base64 of the UTF-8 JSON)."""
    from PIL.PngImagePlugin import PngInfo

    encoded = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8")).decode("ascii")
    info = PngInfo()
    info.add_text(CARD_CHUNK, encoded, zip=False)  # ASCII text and zip=False: a tEXt chunk
    buffer = io.BytesIO()
    image.convert("RGBA" if "A" in image.getbands() else "RGB").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_card(folder: Path, user_id: str, card: dict[str, Any], image) -> tuple[Path, Path]:
    json_path, png_path = folder / f"{user_id}.json", folder / f"{user_id}.png"
    atomic_write_bytes(png_path, png_card_bytes(image, card))
    atomic_write_json(json_path, card)
    return json_path, png_path
