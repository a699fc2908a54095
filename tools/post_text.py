"""Post text rules: X's weighted length and near-duplicate detection.

The weighted length follows twitter-text's v3 configuration (NFC text; code
points in the Latin/punctuation ranges weigh 1, everything else, CJK included,
weighs 2; every URL counts as 23; an emoji sequence counts as 2; limit 280).
Written by hand because the library that implements it, twitter-text-parser,
fails to import on setuptools >= 81 (it needs the removed pkg_resources).
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata

MAX_WEIGHTED_LENGTH = 280
# Texts whose difflib ratio reaches 0.8 share far more than a third of their
# character trigrams; below this overlap the full comparison is skipped.
PREFILTER_OVERLAP = 0.35
URL_WEIGHT = 23
# twitter-text v3: ranges of weight 100 (= 1 character); the rest weigh 200.
_LIGHT_RANGES = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
_URL = re.compile(r"https?://[^\s]+", re.IGNORECASE)
_EMOJI = re.compile(
    "(?:[\U0001F1E6-\U0001F1FF]{2}"                                  # flags
    "|[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u2300-\u23FF]"
    "[\uFE0E\uFE0F]?[\U0001F3FB-\U0001F3FF]?"
    "(?:\u200D[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF][\uFE0E\uFE0F]?[\U0001F3FB-\U0001F3FF]?)*)")


def _char_weight(char: str) -> int:
    code = ord(char)
    return 1 if any(low <= code <= high for low, high in _LIGHT_RANGES) else 2


def weighted_length(text: str) -> int:
    """The length X counts against the 280 limit."""
    text = unicodedata.normalize("NFC", text)
    total = 0
    position = 0
    for match in _URL.finditer(text):
        total += _plain_weight(text[position:match.start()]) + URL_WEIGHT
        position = match.end()
    return total + _plain_weight(text[position:])


def _plain_weight(text: str) -> int:
    total = 0
    position = 0
    for match in _EMOJI.finditer(text):
        total += sum(_char_weight(c) for c in text[position:match.start()]) + 2
        position = match.end()
    return total + sum(_char_weight(c) for c in text[position:])


def fits(text: str) -> bool:
    return 0 < weighted_length(text) <= MAX_WEIGHTED_LENGTH


def _normal_form(text: str) -> str:
    text = _URL.sub(" ", unicodedata.normalize("NFKC", text).lower())
    return " ".join(re.findall(r"\w+", text))


def similarity(a: str, b: str) -> float:
    """0..1: how alike two posts read, ignoring case, punctuation and URLs."""
    return difflib.SequenceMatcher(None, _normal_form(a), _normal_form(b), autojunk=False).ratio()


@functools.lru_cache(maxsize=4096)
def _fingerprint(text: str) -> tuple[str, frozenset[str]]:
    normal = _normal_form(text)
    return normal, frozenset(normal[i:i + 3] for i in range(max(1, len(normal) - 2)))


def near_duplicate(text: str, others, threshold: float = 0.8) -> str | None:
    """The first of ``others`` that ``text`` nearly repeats (difflib ratio >= threshold), or None.

    A cheap character-trigram overlap rules most pairs out before difflib's
    quadratic comparison, so checking hundreds of posts stays fast.
    """
    normal, grams = _fingerprint(text)
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(normal)
    for other in others:
        if not other:
            continue
        other_normal, other_grams = _fingerprint(other)
        overlap = len(grams & other_grams) / (len(grams | other_grams) or 1)
        if overlap < PREFILTER_OVERLAP:
            continue
        matcher.set_seq1(other_normal)
        if matcher.real_quick_ratio() >= threshold and matcher.quick_ratio() >= threshold \
                and matcher.ratio() >= threshold:
            return other
    return None


# What a generated post or plan field must not invent: links (with or without a scheme), e-mail
# addresses and @handles. Small models produce them from their pre-training ("by k & c
# [e-mailing or t ] at http://chuanjiang-"); one the card itself has is allowed.
_LINKISH = (
    ("a link", re.compile(r"(?:https?://|www\.)\S*|\b[\w-]+(?:\.[\w-]+)*\.(?:com|net|org|io|co|cn|me|ly|app|dev|"
                          r"info|biz|xyz|tv|us|uk|de|jp|html?|php)\b(?:/\S*)?", re.IGNORECASE)),
    ("an e-mail address", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    ("an @handle", re.compile(r"(?<![\w@])@\w{2,}")),
    ("a broken link or address", re.compile(r"https?:|\bmailto:|\be-?mail(?:ing)?\b\s*\[", re.IGNORECASE)),
)


def unwanted_link(text: str, allowed: str = "") -> str | None:
    """'a link (http://x.io)' when ``text`` carries a link, e-mail address or @handle that
    ``allowed`` (the card's own text) does not contain; None when it is clean."""
    haystack = allowed.lower()
    for kind, pattern in _LINKISH:
        for match in pattern.finditer(text):
            found = match.group(0).rstrip(".,;:!?)\"'")
            if found and found.lower() not in haystack:
                return f"{kind} ({found[:40]})"
    return None


def clean_post(raw: str) -> str:
    """The post out of a model's answer: first paragraph, no quotes or 'Post:' label."""
    text = raw.strip()
    text = re.sub(r"^(post|tweet)\s*:\s*", "", text, flags=re.IGNORECASE)
    text = text.split("\n\n", 1)[0].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text
