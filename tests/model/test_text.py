"""Upstream text normalisation and the byte tokenizer (spec §8)."""

import pytest
import torch

from echo_tts.config import MAX_TEXT_LENGTH
from echo_tts.errors import InvalidInput, TextTooLong
from echo_tts.text import TextBatch, encode_texts, normalize_text, tokenize_truncating


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello world.", "[S1] Hello world."),
        ("Wait\u2026 what", "[S1] Wait... what"),
        ("It\u2019s fine", "[S1] It's fine"),
        ("He said \u201chi\u201d", '[S1] He said \u201chi"'),  # U+201C is kept, as upstream does
        ("\u2018quoted\u2019", "[S1] \u2018quoted'"),  # U+2018 is kept, as upstream does
        ("one\ntwo", "[S1] one two"),
        ("one\r\ntwo", "[S1] one\r two"),  # LF only; CR untouched
        ("a: b; c", "[S1] a, b, c"),
        ("yes\u2014no", "[S1] yes, no"),
        ("1990\u20132000", "[S1] 1990\u20132000"),  # en dash untouched
        ("[S1] Already tagged", "[S1] Already tagged"),
        ("[music] plays", "[music] plays"),
        ("(laughs) okay", "(laughs) okay"),
        ("Talk to S2 later", "Talk to S2 later"),  # contains "S2" anywhere: no prefix
        ("s1 is lower case", "[S1] s1 is lower case"),  # case-sensitive
        (" [S1] leading space", " [S1] leading space"),  # contains S1: no prefix, no strip
        (" leading space", "[S1]  leading space"),  # no whitespace stripping
        ("", "[S1] "),
        ("a:\u2014b", "[S1] a,, b"),  # substitutions apply in upstream order
        ("  two  spaces  ", "[S1]   two  spaces  "),  # no whitespace collapsing
    ],
)
def test_normalize_text_matches_the_upstream_substitutions(raw, expected):
    # Given a raw prompt / When normalised / Then it equals upstream's output
    assert normalize_text(raw) == expected


def test_encode_texts_puts_bos_first_and_pads_with_masked_zeros():
    # Given two texts of different lengths
    texts = ["[S1] hi", "[S1] hello"]
    # When tokenized
    batch = encode_texts(texts)
    # Then ids are BOS + UTF-8 bytes, padded with masked zeros to the longest row
    assert isinstance(batch, TextBatch)
    assert batch.input_ids.dtype == torch.int32 and batch.mask.dtype == torch.bool
    assert batch.input_ids.shape == (2, 11) and len(batch) == 2
    assert batch.input_ids[0, :8].tolist() == [0, *b"[S1] hi"]
    assert batch.input_ids[0, 8:].tolist() == [0, 0, 0]
    assert batch.mask.sum(dim=1).tolist() == [8, 11]
    assert batch.normalized == texts


def test_encode_texts_normalises_by_default_and_can_be_told_not_to():
    # Given an untagged text / When tokenized with and without normalisation
    normalised = encode_texts(["caf\u00e9"])
    raw = encode_texts(["caf\u00e9"], normalize=False)
    # Then the prefix and the two-byte character appear as bytes only where expected
    assert normalised.normalized == ["[S1] caf\u00e9"]
    assert raw.input_ids[0].tolist() == [0, *"caf\u00e9".encode()]


def test_encode_texts_pads_to_a_fixed_max_length():
    # Given a fixed bucket / When tokenized / Then every row has that length
    batch = encode_texts(["[S1] hi"], max_length=32)
    assert batch.input_ids.shape == (1, 32) and int(batch.mask.sum()) == 8


def test_text_longer_than_one_generation_raises_naming_the_limit_and_byte_count():
    # Given a normalised text of 768 bytes (769 tokens with BOS)
    text = "[S1] " + "a" * 763
    # When tokenized / Then TextTooLong names the 768-token limit and the byte count
    with pytest.raises(TextTooLong, match=r"768 UTF-8 bytes.*limit is 768 tokens.*MAX_TEXT_LENGTH"):
        encode_texts([text])


def test_the_longest_text_that_fits_is_accepted():
    # Given 767 bytes after normalisation / When tokenized / Then 768 ids, all unmasked
    batch = encode_texts(["[S1] " + "a" * 762])
    assert batch.input_ids.shape == (1, MAX_TEXT_LENGTH) and bool(batch.mask.all())


def test_a_row_longer_than_the_requested_max_length_is_an_error_not_a_cut():
    with pytest.raises(TextTooLong, match="max_length"):
        encode_texts(["[S1] hello"], max_length=4)


@pytest.mark.parametrize("max_length", [0, MAX_TEXT_LENGTH + 1])
def test_max_length_outside_the_model_range_is_refused(max_length):
    with pytest.raises(InvalidInput, match="max_length"):
        encode_texts(["hi"], max_length=max_length)


@pytest.mark.parametrize("texts", [[], "a bare string"])
def test_texts_must_be_a_non_empty_sequence_of_strings(texts):
    with pytest.raises(InvalidInput):
        encode_texts(texts)


def test_tokenize_truncating_cuts_silently_like_upstream():
    # Given a text longer than max_length, with a multi-byte character at the cut
    text = "[S1] ab\u00e9"
    # When tokenized with upstream's semantics
    batch = tokenize_truncating([text, "[S1] x"], max_length=9)
    # Then row 0 keeps BOS + the first 8 bytes (splitting the character), row 1 is padded
    assert batch.input_ids[0].tolist() == [0, *text.encode()[:8]]
    assert bool(batch.mask[0].all())
    assert batch.mask[1].sum().item() == 7


def test_tokenize_truncating_without_a_limit_pads_to_the_longest_row():
    batch = tokenize_truncating(["[S1] " + "a" * 800], None)
    assert batch.input_ids.shape == (1, 806)
