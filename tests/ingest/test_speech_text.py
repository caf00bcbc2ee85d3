"""normalize_for_speech: a table of inputs and how they are said, plus "never loses a word"."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.ingest import normalize_for_speech
from jobs.ingest.numwords import cardinal, ordinal, year

SPOKEN = [
    # numbers
    ("I have 3 cats and 42 dogs.", "I have three cats and forty-two dogs."),
    (
        "0, 7, 13, 20, 99, 100, 101, 999",
        "zero, seven, thirteen, twenty, ninety-nine, one hundred, one hundred one, nine hundred ninety-nine",
    ),
    ("1,000,000 stars and 12,345 more", "one million stars and twelve thousand three hundred forty-five more"),
    ("pi is 3.14 and 0.5 is half", "pi is three point one four and zero point five is half"),
    ("It was -5 outside.", "It was minus five outside."),
    ("Agent 007 ran 10km.", "Agent zero zero seven ran ten km."),
    # years and decades
    (
        "In 1984, in 1905, in 1900, in 2000, in 2005, in 2024.",
        "In nineteen eighty-four, in nineteen oh five, in nineteen hundred, in two thousand, in two thousand five, "
        "in twenty twenty-four.",
    ),
    ("the 1980s, the 1900s and the '90s", "the nineteen eighties, the nineteen hundreds and the nineties"),
    # ordinals
    (
        "1st 2nd 3rd 4th 11th 12th 21st 22nd 100th 101st",
        "first second third fourth eleventh twelfth twenty-first twenty-second one hundredth one hundred first",
    ),
    # currency and percentages
    ("It costs $3.50.", "It costs three dollars and fifty cents."),
    (
        "$1, $1.01, $0.99, $2 million, $3.5 billion",
        "one dollar, one dollar and one cent, ninety-nine cents, two million dollars, three point five billion dollars",
    ),
    ("£5 and €12.30", "five pounds and twelve euros and thirty cents"),
    ("50% and 3.5 %", "fifty percent and three point five percent"),
    # times
    ("At 5:30 p.m. Then 7:05 and 9:00.", "At five thirty P M. Then seven oh five and nine o'clock."),
    ("at 6am and 11 PM", "at six A M and eleven P M"),
    # abbreviations
    ("Mr. Smith met Mrs. Jones and Dr. Who.", "Mister Smith met Missus Jones and Doctor Who."),
    ("Ms Lee and Prof. Plum", "Miz Lee and Professor Plum"),
    ("St. Paul lived on Baker St. in London.", "Saint Paul lived on Baker Street in London."),
    (
        "cats, dogs, etc. And e.g. mice, i.e. pests, vs. rats",
        "cats, dogs, et cetera. And for example mice, that is pests, versus rats",
    ),
    ("John Smith Jr. was there.", "John Smith Junior was there."),
    ("No. 5 and #7", "number five and number seven"),
    ("Chapter IV and PART XII", "Chapter four and PART twelve"),
    # symbols
    ("salt & pepper, AT&T, 2 + 2 = 4", "salt and pepper, AT and T, two plus two equals four"),
    (
        "It was 20°C or 68 °F, a 90° turn",
        "It was twenty degrees Celsius or sixty-eight degrees Fahrenheit, a ninety degrees turn",
    ),
    ("write to me@example.com", "write to me at example.com"),
    # cleaning
    ("a\u00adb\u200bc\x00d  \n\t e", "abcd e"),
    ("\ufb01nd \u00bd cup, 2\u00bd cups", "find one half cup, two and one half cups"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "spoken"), SPOKEN)
def test_text_is_normalised_as_a_reader_would_say_it(text: str, spoken: str) -> None:
    # Given text as written, When it is normalised, Then it reads as spoken
    assert normalize_for_speech(text) == spoken


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (15, "fifteen"),
        (40, "forty"),
        (1_000, "one thousand"),
        (1_000_001, "one million one"),
        (2_300_000_000, "two billion three hundred million"),
        (10**15, "one zero zero zero zero zero zero zero zero zero zero zero zero zero zero zero"),
    ],
)
def test_cardinals(n: int, words: str) -> None:
    assert cardinal(n) == words


def test_ordinals_and_years() -> None:
    assert [ordinal(n) for n in (1, 5, 8, 9, 12, 20, 30, 1000)] == [
        "first",
        "fifth",
        "eighth",
        "ninth",
        "twelfth",
        "twentieth",
        "thirtieth",
        "one thousandth",
    ]
    assert [year(n) for n in (1066, 1776, 1800, 2010)] == [
        "ten sixty-six",
        "seventeen seventy-six",
        "eighteen hundred",
        "twenty ten",
    ]


@given(
    st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll")) | st.sampled_from(" ,;:!?'\"-\n"), max_size=200)
)
def test_text_without_numbers_symbols_or_abbreviations_keeps_every_word(text: str) -> None:
    # Given any text of letters, spaces and plain punctuation
    # When it is normalised
    spoken = normalize_for_speech(text)
    # Then it is the same text, whitespace collapsed (and NFKC-normalised): no word is lost or changed,
    # unless it holds a dotless title or "vs", which are expanded
    if not re.search(r"\b(?:Mr|Mrs|Ms|Dr|St|vs)\b", text):
        assert spoken == " ".join(unicodedata.normalize("NFKC", text).split())
