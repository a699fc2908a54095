"""Names that become paths: user ids and persona file names.

Everything a workflow passes in is untrusted (workflows are shared as files and
PNGs), so nothing it names may resolve outside the folder it is meant for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

MAX_USER_ID_LENGTH = 64
_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")


class UnsafePathError(ValueError):
    """A name that would leave its folder, or is not a valid name at all."""


def validate_user_id(user_id: str) -> str:
    """Return ``user_id`` if it is safe as one folder name, else raise with the reason."""
    if not isinstance(user_id, str):
        raise UnsafePathError(f"user_id must be text, got {type(user_id).__name__}")
    if user_id != user_id.strip():
        raise UnsafePathError("user_id must not start or end with spaces")
    if not user_id:
        raise UnsafePathError("user_id is empty; give each persona's account a stable id")
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise UnsafePathError(f"user_id is {len(user_id)} characters; at most {MAX_USER_ID_LENGTH}")
    if "\x00" in user_id:
        raise UnsafePathError("user_id contains a NUL byte")
    if "/" in user_id or "\\" in user_id:
        raise UnsafePathError(f"user_id {user_id!r} contains a path separator")
    if ".." in user_id:
        raise UnsafePathError(f"user_id {user_id!r} contains '..'")
    if not _USER_ID.match(user_id):
        raise UnsafePathError(f"user_id {user_id!r} may hold only letters, digits and _ . @ -, "
                              "starting with a letter or digit")
    return user_id


def safe_join(base: str | os.PathLike, *parts: str) -> Path:
    """``base/parts...`` resolved, refusing any result outside ``base`` (symlinks included)."""
    root = Path(base).resolve()
    for part in parts:
        if not isinstance(part, str) or "\x00" in part:
            raise UnsafePathError(f"invalid path part {part!r}")
        if os.path.isabs(part):
            raise UnsafePathError(f"absolute path {part!r} is not allowed here")
    candidate = root.joinpath(*parts).resolve()
    if candidate != root and root not in candidate.parents:
        raise UnsafePathError(f"{'/'.join(parts)!r} points outside {root}")
    return candidate


def resolve_inside(name: str, folders: Iterable[str | os.PathLike], what: str = "file") -> Path:
    """The first existing ``folder/name`` among ``folders``; never a path outside them."""
    if not isinstance(name, str) or not name.strip():
        raise UnsafePathError(f"{what} name is empty")
    if "\x00" in name:
        raise UnsafePathError(f"{what} name contains a NUL byte")
    if os.path.isabs(name) or name.startswith("~"):
        raise UnsafePathError(f"{what} {name!r} must be a name relative to the allowed folders, "
                              "not an absolute path")
    searched = []
    for folder in folders:
        candidate = safe_join(folder, name)
        searched.append(str(Path(folder)))
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{what} {name!r} not found in: {', '.join(searched) or '(no folders)'}")
