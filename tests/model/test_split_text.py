"""split_text: long text into pieces that each fit one generation (spec §8, DESIGN §3/§5)."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echo_tts.config import MAX_TEXT_LENGTH
from echo_tts.errors import InvalidInput
from echo_tts.text import DEFAULT_SPLIT_BYTES, encode_texts, split_text

WORDS = st.sampled_from(
    [
        "the",
        "cat",
        "sat",
        "Mr.",
        "Dr.",
        "caf\u00e9",
        "na\u00efve",
        "\u00fcber",
        "\u6f22\u5b57",
        "\U0001f600",
        "x" * 30,
        "don't",
        "(aside)",
        '"quoted"',
        "well\u2014then",
        "e.g.",
        "A.",
        "[S2]",
        "3.14",
    ]
)
PUNCT = st.sampled_from(["", "", "", ",", ";", ":", ".", "!", "?", "...", '."', "?)", "\u2026", " -", "\u2014"])
SPACE = st.sampled_from([" ", " ", " ", "  ", "\n", "\n\n", "\t", " \u00a0"])
TEXTS = st.lists(st.tuples(WORDS, PUNCT, SPACE).map("".join), max_size=120).map("".join)
ANY_TEXT = st.text(max_size=300)


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _cut_positions(pieces: list[str]) -> list[int]:
    positions, at = [], 0
    for piece in pieces[:-1]:
        at += len(piece)
        positions.append(at)
    return positions


def _inside_an_overlong_word(text: str, position: int, max_bytes: int) -> bool:
    for word in re.finditer(r"\S+", text):
        if word.start() < position < word.end():
            return _nbytes(word.group()) > max_bytes
    return False


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(TEXTS, ANY_TEXT), max_bytes=st.integers(min_value=4, max_value=200))
def test_pieces_join_back_fit_the_limit_and_are_never_empty(text, max_bytes):
    # Given any text and limit / When split
    pieces = split_text(text, max_bytes)
    # Then the pieces join back to the text exactly, each fits, none is empty
    if text.strip():
        assert "".join(pieces) == text
    else:
        assert pieces == []
    assert all(piece and _nbytes(piece) <= max_bytes for piece in pieces)


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, max_bytes=st.integers(min_value=4, max_value=200))
def test_no_piece_boundary_falls_inside_a_word_unless_the_word_alone_is_too_long(text, max_bytes):
    # Given prose-like text / When split
    pieces = split_text(text, max_bytes)
    # Then no cut falls between two non-space characters, except after a joining dash or
    # inside one word that alone exceeds the limit
    for position in _cut_positions(pieces):
        between_word_characters = not text[position - 1].isspace() and not text[position].isspace()
        after_dash = text[:position].endswith(("\u2014", "--"))
        assert not between_word_characters or after_dash or _inside_an_overlong_word(text, position, max_bytes), (
            text[max(0, position - 10) : position] + "|" + text[position : position + 10]
        )


@settings(max_examples=100, deadline=None)
@given(text=TEXTS)
def test_every_piece_at_the_default_limit_tokenizes_within_one_generation(text):
    # Given the default limit / When each piece is normalised and tokenized
    for piece in split_text(text):
        # Then it fits MAX_TEXT_LENGTH tokens without raising
        assert encode_texts([piece]).input_ids.shape[1] <= MAX_TEXT_LENGTH


def test_the_default_limit_is_the_largest_that_always_fits():
    # Given the worst case for the default: untagged text of exactly the limit
    text = "a" * DEFAULT_SPLIT_BYTES
    # When tokenized / Then "[S1] " + text + BOS is exactly MAX_TEXT_LENGTH tokens
    assert encode_texts([text]).input_ids.shape[1] == MAX_TEXT_LENGTH == DEFAULT_SPLIT_BYTES + 6


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n"])
def test_whitespace_only_text_gives_no_pieces(text):
    assert split_text(text) == []


def test_text_that_fits_comes_back_whole():
    assert split_text("  Short text.  ") == ["  Short text.  "]


def test_sentences_are_packed_and_cut_only_at_sentence_ends():
    # Given four 30-byte sentences and room for two
    text = "This is sentence number one. " * 4
    # When split at 60 bytes / Then two balanced pieces of two whole sentences each
    assert split_text(text, 60) == ["This is sentence number one. This is sentence number one. "] * 2


def test_cuts_are_balanced_rather_than_greedy():
    # Given five 20-byte sentences and room for four and a half
    sentence = "Aaaa bbbb cccc ddd. "
    # When split at 90 bytes / Then 3 + 2 sentences, not the greedy 4 + 1
    assert split_text(sentence * 5, 90) == [sentence * 3, sentence * 2]


def test_a_long_sentence_is_cut_at_a_clause_boundary_before_any_word_boundary():
    # Given one sentence too long for the limit, with a single comma
    text = "the quick brown fox jumps over, the lazy dog sleeps on and on."
    # When split / Then the cut follows the comma
    assert split_text(text, 40) == ["the quick brown fox jumps over, ", "the lazy dog sleeps on and on."]


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ('He said "Stop right there." Then he left the room.', 'He said "Stop right there." '),
        ("It was late (nearly midnight.) She left at once.", "It was late (nearly midnight.) "),
    ],
)
def test_closing_quotes_and_brackets_stay_with_their_sentence(text, first):
    assert split_text(text, 32)[0] == first


def test_abbreviations_and_initials_are_not_sentence_ends():
    # Given a sentence with "Mr." and an initial, then a real sentence end
    text = "I met Mr. J. Smith at noon today. We talked about the weather."
    # When split / Then the only cut is after "today."
    assert split_text(text, 40) == ["I met Mr. J. Smith at noon today. ", "We talked about the weather."]


def test_dialogue_turns_start_new_pieces():
    text = "[S1] Hello there, how are you doing. [S2] I am fine, thanks a lot for asking."
    assert split_text(text, 50) == ["[S1] Hello there, how are you doing. ", "[S2] I am fine, thanks a lot for asking."]


def test_a_word_longer_than_the_limit_is_the_only_thing_cut_inside_and_never_mid_character():
    # Given a word of 12 two-byte characters and a 7-byte limit
    text = "\u00e9" * 12 + " end"
    # When split / Then pieces fit, and each decodes on its own (no character is broken)
    pieces = split_text(text, 7)
    assert "".join(pieces) == text and all(_nbytes(p) <= 7 for p in pieces)
    assert pieces[-1].endswith("end")


def test_a_limit_below_one_character_is_refused():
    with pytest.raises(InvalidInput, match="max_bytes"):
        split_text("hello", 3)
