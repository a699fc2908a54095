"""Where results go: ``OUTPUT_DIR`` / config ``output.output_dir``, else ComfyUI's
output folder, else ``./output``. Everything below it is joined safely."""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path

from .comfy_env import output_directory
from .safe_paths import UnsafePathError, safe_join, validate_user_id
from .settings import OutputSettings

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits only (\d takes any script's)


def output_root() -> Path:
    configured = OutputSettings.load().output_dir
    if configured:
        return Path(configured).expanduser().resolve()
    comfy = output_directory()
    return (comfy if comfy is not None else Path(os.getcwd()) / "output").resolve()


def new_day_folder(root: Path, user_id: str, day: str) -> Path:
    """``<root>/<user_id>/<date>``, or ``<date>_2``, ``_3``... if it exists: never overwrite a run.

    ``os.mkdir`` is atomic, so two workflows saving the same day at once get two folders.
    """
    validate_user_id(user_id)
    if not isinstance(day, str) or not _DATE.fullmatch(day):
        raise UnsafePathError(f"date must look like YYYY-MM-DD, got {day!r}")
    try:
        date.fromisoformat(day)
    except ValueError:
        raise UnsafePathError(f"date {day!r} is not a calendar date") from None
    user_dir = safe_join(root, user_id)
    user_dir.mkdir(parents=True, exist_ok=True)
    for run in range(1, 10_000):
        folder = safe_join(user_dir, day if run == 1 else f"{day}_{run}")
        try:
            os.mkdir(folder)
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"too many runs saved for {user_id} on {day}")
