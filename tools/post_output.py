"""Saving one day's result: ``<output>/<user_id>/<date>/`` with tweet.txt,
image.png (when there is an image), scene_hint.txt and metadata.json.

A second run for the same user and date gets ``<date>_2`` (never an overwrite),
every file is written atomically, and nothing can land outside the output root.
Metadata holds exactly the documented fields: no prompt, workflow or key.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..utils.file_lock import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..utils.output_paths import new_day_folder
from .post_text import weighted_length


def build_metadata(user_id: str, persona_name: str, day: str, workflow_id: str | None, text: str,
                   scene_hint: str, lora_model: str, lora_weight: float) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "persona_name": persona_name,
        "date": day,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "workflow_id": workflow_id,
        "content": {"tweet_text": text, "tweet_length": weighted_length(text), "scene_hint": scene_hint},
        "lora": {"model": lora_model or None, "weight": float(lora_weight)},
    }


def png_bytes(pixels) -> bytes:
    """An HxWxC array of 0..1 floats (one ComfyUI IMAGE) as PNG bytes."""
    import numpy as np
    from PIL import Image

    array = np.clip(np.asarray(pixels, dtype=np.float32) * 255.0, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save_day(root: Path, metadata: dict[str, Any], images: list | None = None) -> Path:
    folder = new_day_folder(root, metadata["user_id"], metadata["date"])
    content = metadata["content"]
    atomic_write_text(folder / "tweet.txt", content["tweet_text"] + "\n")
    atomic_write_text(folder / "scene_hint.txt", content["scene_hint"] + "\n")
    for index, pixels in enumerate(images or []):
        name = "image.png" if index == 0 else f"image_{index + 1}.png"
        atomic_write_bytes(folder / name, png_bytes(pixels))
    atomic_write_json(folder / "metadata.json", metadata)  # last: its presence means the folder is complete
    return folder
