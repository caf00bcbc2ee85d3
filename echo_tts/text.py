"""Text handling: upstream normalisation, the byte tokenizer, and splitting long text (spec §8).

The model reads raw UTF-8 bytes with a BOS id 0 in front, at most ``MAX_TEXT_LENGTH`` ids per
generation. :func:`encode_texts` refuses longer text (``TextTooLong``) instead of cutting it;
:func:`tokenize_truncating` keeps upstream's silent cut for the compatibility layer;
:func:`split_text` cuts long text into pieces that each fit one generation.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch

from .config import MAX_TEXT_LENGTH
from .errors import InvalidInput, TextTooLong

BOS_ID = 0  # id prepended to every sequence; also the padding id (masked out)
SPEAKER_PREFIX = "[S1] "  # prepended by normalize_text to untagged text

# Upstream `normalize_text_prompt`, in its order. U+201C and U+2018 are deliberately absent
# (upstream converts U+201D twice and never the opening quotes); "\n" is LF only.
_SUBSTITUTIONS: tuple[tuple[str, str], ...] = (
    ("\u2026", "..."),  # horizontal ellipsis
    ("\u2019", "'"),  # right single quotation mark
    ("\u201d", '"'),  # right double quotation mark
    ("\n", " "),
    (":", ","),
    (";", ","),
    ("\u2014", ", "),  # em dash -> comma + space
)

# Normalisation never adds bytes (each substitution keeps or shrinks the UTF-8 length), so a
# piece of this many bytes still fits one generation after the "[S1] " prefix and BOS.
DEFAULT_SPLIT_BYTES = MAX_TEXT_LENGTH - 1 - len(SPEAKER_PREFIX.encode("utf-8"))  # 762


def normalize_text(text: str) -> str:
    """Upstream's prompt normalisation: the fixed substitutions, then the ``[S1] `` prefix rule.

    The prefix is added when the text starts with neither ``[`` nor ``(`` and contains neither
    ``S1`` nor ``S2`` anywhere (case-sensitive). Nothing else changes (no stripping, no case).
    """
    for old, new in _SUBSTITUTIONS:
        text = text.replace(old, new)
    if not text.startswith("[") and not text.startswith("(") and "S1" not in text and "S2" not in text:
        text = SPEAKER_PREFIX + text
    return text


@dataclass(frozen=True)
class TextBatch:
    """Tokenized text: ``input_ids`` (B, L) int32 with BOS first, ``mask`` (B, L) bool, and the
    normalised strings the ids were made from (the raw strings when normalisation was off)."""

    input_ids: torch.Tensor
    mask: torch.Tensor
    normalized: list[str]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> TextBatch:
        return TextBatch(self.input_ids.to(device), self.mask.to(device), list(self.normalized))


def _token_bytes(texts: Sequence[str], normalize: bool) -> tuple[list[str], list[bytes]]:
    if isinstance(texts, str):
        raise InvalidInput("texts must be a sequence of strings, not one string")
    if len(texts) == 0:
        raise InvalidInput("texts is empty: give at least one text")
    strings = [normalize_text(t) if normalize else t for t in texts]
    return strings, [s.encode("utf-8") for s in strings]


def _pack(strings: list[str], encoded: list[bytes], max_length: int) -> TextBatch:
    ids = torch.zeros((len(encoded), max_length), dtype=torch.int32)  # (B, L) padding id 0
    mask = torch.zeros((len(encoded), max_length), dtype=torch.bool)  # (B, L)
    for row, data in enumerate(encoded):
        tokens = [BOS_ID, *data][:max_length]
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int32)
        mask[row, : len(tokens)] = True
    return TextBatch(ids, mask, strings)


def encode_texts(texts: Sequence[str], *, max_length: int | None = None, normalize: bool = True) -> TextBatch:
    """Tokenize a batch; raise ``TextTooLong`` rather than cut anything.

    ``max_length`` pads every row to that many ids (a fixed shape for compiled models); ``None``
    pads to the longest row. No row may exceed ``MAX_TEXT_LENGTH`` ids (BOS included) nor
    ``max_length``; ``max_length`` itself must lie in 1..``MAX_TEXT_LENGTH``.
    """
    if max_length is not None and not 1 <= max_length <= MAX_TEXT_LENGTH:
        raise InvalidInput(f"max_length must be between 1 and {MAX_TEXT_LENGTH} (MAX_TEXT_LENGTH), got {max_length}")
    strings, encoded = _token_bytes(texts, normalize)
    limit = MAX_TEXT_LENGTH if max_length is None else max_length
    for index, data in enumerate(encoded):
        if len(data) + 1 > limit:
            what = " after normalisation" if normalize else ""
            name = "MAX_TEXT_LENGTH" if limit == MAX_TEXT_LENGTH else "max_length"
            raise TextTooLong(
                f"text {index} is {len(data)} UTF-8 bytes{what} ({len(data) + 1} tokens with BOS); the limit "
                f"is {limit} tokens per generation ({name}: {limit - 1} bytes + BOS); "
                "split longer text with echo_tts.text.split_text"
            )
    length = max_length if max_length is not None else max(len(data) + 1 for data in encoded)
    return _pack(strings, encoded, length)


def tokenize_truncating(
    texts: Sequence[str], max_length: int | None = MAX_TEXT_LENGTH, *, normalize: bool = True
) -> TextBatch:
    """Upstream ``get_text_input_ids_and_mask``: rows longer than ``max_length`` are cut silently.

    A cut row keeps BOS and its first ``max_length - 1`` bytes (a multi-byte character may be
    split). ``None`` means the longest row, uncut. For the upstream-compatible layer only.
    """
    if max_length is not None and max_length < 1:
        raise InvalidInput(f"max_length must be >= 1, got {max_length}")
    strings, encoded = _token_bytes(texts, normalize)
    length = max_length if max_length is not None else max(len(data) + 1 for data in encoded)
    return _pack(strings, encoded, length)


# --- splitting ----------------------------------------------------------------------------
# Cut levels, best first. A cut always sits at the start of a word (after whitespace) or right
# after a dash joining two words; only a single word longer than the limit is cut inside.
_SENTENCE, _CLAUSE, _WORD, _CHAR = range(4)

_CLOSERS = "\"'\u201d\u2019\u00bb)\\]}"  # closing quotes/brackets stay with what they close
_SENTENCE_END = re.compile(rf"[.!?\u2026][{_CLOSERS}]*$")
_CLAUSE_END = re.compile(rf"(?:[,;:\u2014\u2013]|\s-|--)[{_CLOSERS}]*$")
_ABBREVIATION = re.compile(
    r"(?:^|[\s(\"'])(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|Mt|vs|No|cf|Fig|Gen|Col|Lt|Sgt|Capt|Rev|Hon|e\.g|i\.e|[A-HJ-Z])\.$"
)
_SPEAKER_TAG = re.compile(r"\[S\d+\]")
_JOINING_DASH = re.compile(r"(?<=\S)(?:\u2014|--)(?=\S)")


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _whitespace_cut_level(text: str, start: int, end: int) -> int:
    """Level of a cut at ``end``, the end of the whitespace run ``text[start:end]``."""
    if "\n" in text[start:end] or _SPEAKER_TAG.match(text, end):
        return _SENTENCE  # line breaks and dialogue turns are the strongest boundaries
    before = text[max(0, start - 12) : start]
    if _SENTENCE_END.search(before) and not _ABBREVIATION.search(before) and not text[end].islower():
        return _SENTENCE
    if _SENTENCE_END.search(before) or _CLAUSE_END.search(before):
        return _CLAUSE
    return _WORD


def _cut_candidates(text: str) -> dict[int, int]:
    """Every possible cut position (a str index) with its level, except inside-word cuts."""
    cuts: dict[int, int] = {}
    for run in re.finditer(r"\s+", text):
        if run.start() > 0 and run.end() < len(text):
            cuts[run.end()] = _whitespace_cut_level(text, run.start(), run.end())
    for dash in _JOINING_DASH.finditer(text):
        cuts.setdefault(dash.end(), _CLAUSE)
    return cuts


def _refine(text: str, cuts: dict[int, int], max_bytes: int) -> dict[int, int]:
    """The cut positions to consider: all sentence cuts; clause cuts only inside stretches that
    sentence cuts leave over the limit; word cuts only inside clauses still over it; and, inside
    a single word over the limit, greedy cuts between characters."""
    chosen = {0: _SENTENCE, len(text): _SENTENCE}
    chosen.update((p, level) for p, level in cuts.items() if level == _SENTENCE)
    for level in (_CLAUSE, _WORD):
        positions = sorted(p for p, lv in cuts.items() if lv == level)
        for lo, hi in _long_spans(text, chosen, max_bytes):
            chosen.update((p, level) for p in positions[bisect_right(positions, lo) : bisect_left(positions, hi)])
    for lo, hi in _long_spans(text, chosen, max_bytes):
        size = 0
        for index in range(lo, hi):
            width = _nbytes(text[index])
            if size + width > max_bytes:
                chosen[index], size = _CHAR, 0
            size += width
    return chosen


def _long_spans(text: str, chosen: dict[int, int], max_bytes: int) -> list[tuple[int, int]]:
    bounds = sorted(chosen)
    return [(lo, hi) for lo, hi in pairwise(bounds) if _nbytes(text[lo:hi]) > max_bytes]


def _best_cuts(text: str, cuts: dict[int, int], max_bytes: int) -> list[int]:
    """Dynamic programme over cut positions: fewest inside-word, then word, then clause cuts,
    then the smallest sum of squared slack (few, evenly filled pieces)."""
    positions = sorted(cuts)
    offsets = [_nbytes(text[: positions[0]])]
    for lo, hi in pairwise(positions):
        offsets.append(offsets[-1] + _nbytes(text[lo:hi]))
    best: list[tuple[int, int, int, int] | None] = [(0, 0, 0, 0)] + [None] * (len(positions) - 1)
    back = [0] * len(positions)
    for j in range(1, len(positions)):
        for i in range(j - 1, -1, -1):
            size = offsets[j] - offsets[i]
            if size > max_bytes:
                break
            previous = best[i]
            if previous is None:
                continue
            penalty = [0, 0, 0]  # char, word, clause cuts at the start of this piece
            if i > 0 and cuts[positions[i]] != _SENTENCE:
                penalty[_CHAR - cuts[positions[i]]] = 1
            cost = (
                previous[0] + penalty[0],
                previous[1] + penalty[1],
                previous[2] + penalty[2],
                previous[3] + (max_bytes - size) ** 2,
            )
            if best[j] is None or cost < best[j]:
                best[j], back[j] = cost, i
    assert best[-1] is not None, "every gap between candidates fits the limit"
    chain, j = [], len(positions) - 1
    while j > 0:
        chain.append(positions[j])
        j = back[j]
    return [0, *reversed(chain)]


def split_text(text: str, max_bytes: int = DEFAULT_SPLIT_BYTES) -> list[str]:
    """Split text into pieces of at most ``max_bytes`` UTF-8 bytes with ``"".join(pieces) == text``.

    Cuts go at sentence ends (also line breaks and before ``[S1]``/``[S2]`` turns) wherever that
    suffices; a sentence longer than the limit is cut at clause boundaries (``, ; :`` and dashes),
    a clause longer than the limit between words. The one exception: a single word longer than
    the limit is cut between characters (never inside a UTF-8 character). Whitespace after a cut
    point stays at the end of the earlier piece; closing quotes and brackets stay with their
    sentence. Among valid cuttings the fewest, most evenly filled pieces win. No piece is empty;
    whitespace-only text gives ``[]``. The default limit is the largest that always fits one
    generation after normalisation, the ``[S1] `` prefix and BOS.
    """
    if max_bytes < 4:
        raise InvalidInput(f"max_bytes must be >= 4 (one UTF-8 character), got {max_bytes}")
    if not text.strip():
        return []
    if _nbytes(text) <= max_bytes:
        return [text]
    cuts = _refine(text, _cut_candidates(text), max_bytes)
    bounds = _best_cuts(text, cuts, max_bytes)
    return [text[lo:hi] for lo, hi in pairwise(bounds)]
