"""Persona cards on this machine -> the ``personas`` of a ``persona_posts`` batch.

Globs are expanded here and every card travels as ``persona_json``, so the
server needs no access to the files. Cards are checked with the same code the
PersonaLoader node uses, so a bad card fails here, naming its file, before
anything is queued.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..tools.persona_card import EXTENSION_KEY, PersonaError, card_from_file
from ..utils.safe_paths import UnsafePathError, validate_user_id


class PersonaFileError(ValueError):
    """A persona file that cannot be sent, with a message naming the file."""


@dataclass(frozen=True)
class PersonaEntry:
    path: Path
    user_id: str
    persona_json: str = field(repr=False)

    def as_batch_entry(self) -> dict[str, str]:
        return {"persona_json": self.persona_json, "user_id": self.user_id}


def expand_patterns(patterns: Iterable[str]) -> list[Path]:
    """Files matching any pattern (``~`` and ``**`` work), each once, in a stable order."""
    found: dict[Path, Path] = {}
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        matches = sorted(glob.glob(expanded, recursive=True)) if glob.has_magic(expanded) else [expanded]
        files = [Path(match) for match in matches if Path(match).is_file()]
        if not files:
            raise PersonaFileError(f"no persona file matches {pattern!r}")
        for path in files:
            found.setdefault(path.resolve(), path)
    return list(found.values())


def user_id_for(card: dict[str, Any], path: Path) -> str:
    """The card's ``data.extensions.twitterchat.user_id``, else the file name without its suffix."""
    extensions = card.get("data", {}).get("extensions")
    own = extensions.get(EXTENSION_KEY) if isinstance(extensions, dict) else None
    user_id = own.get("user_id") if isinstance(own, dict) else None
    return user_id if isinstance(user_id, str) and user_id.strip() else path.stem


def read_persona(path: Path) -> PersonaEntry:
    try:
        card = card_from_file(path)
        user_id = validate_user_id(user_id_for(card, path))
    except UnsafePathError as exc:
        raise PersonaFileError(f"{path}: {exc} (set data.extensions.{EXTENSION_KEY}.user_id "
                               "in the card, or rename the file)") from None
    except (PersonaError, OSError) as exc:
        message = str(exc).removeprefix(f"{path.name}: ")  # the card reader names the file alone
        raise PersonaFileError(f"{path}: {message}") from None
    if path.suffix.lower() == ".png":  # the card sits in a PNG chunk: send its JSON
        text = json.dumps(card, ensure_ascii=False)
    else:
        text = path.read_text(encoding="utf-8")
    return PersonaEntry(path, user_id, text)


def read_personas(patterns: Iterable[str]) -> list[PersonaEntry]:
    """Every matching card, read and checked; two cards for one user id are refused."""
    entries = [read_persona(path) for path in expand_patterns(patterns)]
    owners: dict[str, Path] = {}
    for entry in entries:
        if entry.user_id in owners:
            raise PersonaFileError(f"{owners[entry.user_id]} and {entry.path} are both user "
                                   f"{entry.user_id!r}; their posts would land in one folder")
        owners[entry.user_id] = entry.path
    return entries
