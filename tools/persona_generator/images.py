"""The persona's picture: read (a file or a ComfyUI IMAGE), downscaled for the model, and
the PNG card's picture (the image itself, or a plain portrait placeholder without one)."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Any

from ...utils.llm import ImagePart

MAX_SIDE = 1024                 # the long side of the image sent to a vision model
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 64_000_000          # larger is refused before decoding (an image bomb costs nothing)
PLACEHOLDER_SIZE = (512, 768)


class PersonaImageError(ValueError):
    """An image that cannot be used, with a message naming the problem."""


def open_image(path: Path):
    """A PIL image from a file, checked before its pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PersonaImageError(f"image not found: {path}") from None
    if size > MAX_IMAGE_BYTES:
        raise PersonaImageError(f"{path.name}: {size} bytes; at most {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    try:
        image = Image.open(path)
        if image.width * image.height > MAX_PIXELS:
            raise PersonaImageError(f"{path.name}: {image.width}x{image.height} pixels is too large")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise PersonaImageError(f"{path.name}: not a readable image ({exc})") from None
    return image


def image_from_pixels(pixels: Any):
    """A PIL image from one ComfyUI IMAGE item (H x W x C floats in 0..1)."""
    import numpy as np
    from PIL import Image

    array = np.clip(np.asarray(pixels, dtype=np.float32) * 255.0, 0, 255).astype(np.uint8)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise PersonaImageError(f"IMAGE must be H x W x C with 1, 3 or 4 channels, got shape {array.shape}")
    if array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_part(image) -> ImagePart:
    """The image for a vision model: at most ``MAX_SIDE`` px on its long side, as a base64 PNG part."""
    small = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    small.thumbnail((MAX_SIDE, MAX_SIDE))
    encoded = base64.b64encode(png_bytes(small)).decode("ascii")
    return ImagePart(data_url=f"data:image/png;base64,{encoded}")


def fingerprint(image) -> str:
    """A short hash of the pixels: which image a run's checkpoints were made from."""
    return hashlib.sha256(image.tobytes() + repr((image.mode, image.size)).encode()).hexdigest()[:16]


def placeholder_portrait():
    """A plain portrait placeholder (head and shoulders on a soft background) for a card
    generated without an image."""
    from PIL import Image, ImageDraw

    width, height = PLACEHOLDER_SIZE
    image = Image.new("RGB", PLACEHOLDER_SIZE, (222, 226, 232))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.32, height * 0.2, width * 0.68, height * 0.5), fill=(160, 168, 180))
    draw.ellipse((width * 0.12, height * 0.55, width * 0.88, height * 1.25), fill=(160, 168, 180))
    return image
