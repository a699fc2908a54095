"""The character cards ``PersonaLoader`` offers in its ``persona_file`` list.

Plain Python. A choice is the name ``persona_file`` resolves (the pack's example
cards by their bare name, ComfyUI's input folder by the path under it): cards at
the top of the example folder, ``.json`` cards at the top of the input folder
(an input folder is mostly images: its ``.png`` files are not read), and every
``.json``/``.png`` card in the input folder's upload subfolder. A file that does
not read as a card is left out. Listings are remembered per folder until the
folder changes (ComfyUI asks for the list on every page load and validation).
"""

from __future__ import annotations

import threading
from pathlib import Path

from .persona_card import PersonaError, card_from_file

UPLOAD_SUBFOLDER = "personas"  # under ComfyUI's input folder; the upload button puts cards here
CARD_SUFFIXES = (".json", ".png")
LIST_LIMIT = 500

_cache: dict[tuple[str, tuple[str, ...]], tuple[int, list[str]]] = {}
_cache_lock = threading.Lock()


def _is_card(path: Path) -> bool:
    try:
        card_from_file(path)
    except (PersonaError, OSError):
        return False
    return True


def cards_in(folder: Path, suffixes: tuple[str, ...] = CARD_SUFFIXES) -> list[str]:
    """Names of the cards at the top of ``folder`` (sorted; empty when it does not exist)."""
    try:
        stamp = folder.stat().st_mtime_ns
    except OSError:
        return []
    key = (str(folder), suffixes)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
    except OSError:
        return []
    names = [p.name for p in paths[:LIST_LIMIT] if p.is_file() and _is_card(p)]
    with _cache_lock:
        _cache[key] = (stamp, names)
    return names


def persona_choices(examples_dir: Path, input_dir: Path | None) -> list[str]:
    """Every card ``persona_file`` may name, example cards first; no name twice."""
    choices = list(cards_in(examples_dir))
    if input_dir is not None:
        choices += [name for name in cards_in(input_dir, (".json",)) if name not in choices]
        choices += [f"{UPLOAD_SUBFOLDER}/{name}" for name in cards_in(input_dir / UPLOAD_SUBFOLDER)]
    return choices
