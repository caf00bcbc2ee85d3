"""Speech normalisation (English): text as a reader would say it, for the TTS model.

:func:`normalize_for_speech` runs these named steps in order, each a small function:

1. ``clean``: Unicode NFKC (ligatures, full-width forms), vulgar fractions, control and invisible
   characters dropped, whitespace collapsed to single spaces.
2. ``expand_abbreviations``: Mr./Mrs./Ms./Dr./St./Prof./Jr./Sr. and other titles; etc., e.g., i.e.,
   vs., approx.; "No. 5". "St." and "Dr." before a capitalised name are Saint and Doctor, else
   Street and Drive. A full stop that also ends the sentence is kept.
3. ``expand_numbers``: currency ($3.50, £5, €2 million), percentages, clock times (5:30 p.m.),
   ordinals (21st), decades (1980s, '90s), "Chapter IV", then any other number: four-digit numbers
   from 1100 to 2099 (without a thousands comma) read as years, leading-zero strings digit by
   digit, decimals as "point" digits, others as cardinals.
4. ``expand_symbols``: & + = @ ° % # ×.

Conservative by design: it only rewrites what it recognises and never drops a word.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from jobs.ingest.numwords import ONES, cardinal, digits, ordinal, plural, year
from jobs.ingest.textfile import INVISIBLE

_FRACTIONS = {"½": "one half", "¼": "one quarter", "¾": "three quarters", "⅓": "one third", "⅔": "two thirds"}
_FRACTION = re.compile(r"(\d)?\s*([½¼¾⅓⅔])")
_WHITESPACE = re.compile(r"\s+")
# the text after an abbreviation's full stop starts a new sentence: keep the stop
_ENDS_SENTENCE = re.compile(r"\s+[A-Z\"“‘(]|\s*$")

_TITLES = {
    "Mr": "Mister",
    "Mrs": "Missus",
    "Ms": "Miz",
    "Prof": "Professor",
    "Capt": "Captain",
    "Gen": "General",
    "Lt": "Lieutenant",
    "Col": "Colonel",
    "Sgt": "Sergeant",
    "Rev": "Reverend",
    "Hon": "Honorable",
    "Mt": "Mount",
    "Ft": "Fort",
}
_TITLE = re.compile(r"\b(?:(Mr|Mrs|Ms)\b\.?|(Prof|Capt|Gen|Lt|Col|Sgt|Rev|Hon|Mt|Ft)\.)(?=\s+[A-Z])")
_SAINT_DOCTOR = re.compile(r"\b(St|Dr)\.?(?=\s+[A-Z])")
_STREET_DRIVE = re.compile(r"(?<=[A-Za-z0-9] )(St|Dr)\.")
_ABBREVIATIONS = {
    "etc": "et cetera",
    "e.g": "for example",
    "i.e": "that is",
    "vs": "versus",
    "approx": "approximately",
    "jr": "Junior",
    "sr": "Senior",
}
_ABBREVIATION = re.compile(r"(?<![\w.])(etc|e\.g|i\.e|vs|approx|Jr|Sr)\.", re.I)
_VERSUS = re.compile(r"(?<=\s)vs(?=\s)")
_MERIDIEM = re.compile(r"(?<=\d)\s?([AaPp])\.?[Mm]\b\.?")
_NUMBER_SIGN = re.compile(r"\b(?:No|no|Nr)\.\s?(?=\d)|#(?=\d)")

_NUMBER = r"(\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
_CURRENCY = re.compile(rf"([$£€])\s?{_NUMBER}(?:\.(\d+))?(?:\s+(thousand|million|billion|trillion)\b)?")
_UNITS = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}
_PERCENT = re.compile(rf"(?<![\w.]){_NUMBER}(?:\.(\d+))?\s?%")
_TIME = re.compile(r"(?<![\w.:])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])")
_ORDINAL = re.compile(rf"(?<![\w.]){_NUMBER}(st|nd|rd|th)\b", re.I)
_DECADE = re.compile(r"(?<![\w.'])(?:(1[1-9]|20)(\d0)|'?([2-9]0))s\b")
_ROMAN_AFTER = re.compile(
    r"\b(Chapter|CHAPTER|Part|PART|Book|BOOK|Volume|VOLUME|Vol\.|Act|ACT|Scene|SCENE)\s+"
    r"(?=[MDCLXVI])(M{0,4}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3}))\b"
)
_PLAIN_NUMBER = re.compile(rf"(?:(?<![^\s(\[])([-−]))?(?<![\w.,]){_NUMBER}(?:\.(\d+))?(?![\d,]\d)(?=(\w)?)")
_ROMAN_VALUES = {"M": 1000, "D": 500, "C": 100, "L": 50, "X": 10, "V": 5, "I": 1}

_SYMBOLS = (
    (re.compile(r"\s?°\s?C\b"), " degrees Celsius"),
    (re.compile(r"\s?°\s?F\b"), " degrees Fahrenheit"),
    (re.compile(r"\s?°"), " degrees"),
    (re.compile(r"\s?%"), " percent"),
    (re.compile(r"\s?&\s?"), " and "),
    (re.compile(r"\s?\+\s?"), " plus "),
    (re.compile(r"\s?=\s?"), " equals "),
    (re.compile(r"\s?×\s?"), " times "),
    (re.compile(r"(?<=\w)@(?=\w)"), " at "),
    (re.compile(r"\s@\s"), " at "),
)


def normalize_for_speech(text: str) -> str:
    """``text`` as it should be spoken (see the module docstring): "Dr. Smith paid $3.50 on
    May 21st, 1984." -> "Doctor Smith paid three dollars and fifty cents on May twenty-first,
    nineteen eighty-four."."""
    for step in STEPS:
        text = step(text)
    return _WHITESPACE.sub(" ", text).strip()


def clean(text: str) -> str:
    """NFKC, vulgar fractions as words, control/invisible characters dropped, whitespace collapsed."""
    text = _FRACTION.sub(lambda m: (f"{m[1]} and " if m[1] else " ") + _FRACTIONS[m[2]], text)
    text = unicodedata.normalize("NFKC", text)
    return _WHITESPACE.sub(" ", INVISIBLE.sub("", text)).strip()


def expand_abbreviations(text: str) -> str:
    """Titles, Saint/Street, Doctor/Drive, Latin abbreviations and "No." before a number."""
    text = _TITLE.sub(lambda m: _TITLES[m[1] or m[2]], text)
    text = _SAINT_DOCTOR.sub(lambda m: "Saint" if m[1] == "St" else "Doctor", text)
    text = _STREET_DRIVE.sub(lambda m: ("Street" if m[1] == "St" else "Drive") + _stop(m, text), text)
    text = _ABBREVIATION.sub(lambda m: _ABBREVIATIONS[m[1].lower()] + _stop(m, text), text)
    text = _VERSUS.sub("versus", text)
    text = _MERIDIEM.sub(lambda m: _meridiem(m, text), text)
    return _NUMBER_SIGN.sub("number ", text)


def _meridiem(m: re.Match[str], text: str) -> str:
    """5pm, 5 p.m. -> 5 P M (letters spoken one by one); a final stop that ends the sentence is kept."""
    return (" A M" if m[1] in "Aa" else " P M") + (_stop(m, text) if m[0].endswith(".") else "")


def _stop(match: re.Match[str], text: str) -> str:
    """ "." when the full stop of the matched abbreviation also ends its sentence."""
    return "." if _ENDS_SENTENCE.match(text, match.end()) else ""


def expand_numbers(text: str) -> str:
    """Currency, percentages, times, ordinals, decades, Roman chapter numbers, then plain numbers."""
    text = _CURRENCY.sub(_currency, text)
    text = _PERCENT.sub(lambda m: f"{_number(m[1], m[2])} percent", text)
    text = _TIME.sub(_time, text)
    text = _ORDINAL.sub(lambda m: ordinal(_int(m[1])), text)
    text = _DECADE.sub(_decade, text)
    text = _ROMAN_AFTER.sub(lambda m: f"{m[1]} {cardinal(_roman(m[2]))}", text)
    return _PLAIN_NUMBER.sub(_plain, text)


def expand_symbols(text: str) -> str:
    """& + = @ ° % × as words."""
    for pattern, words in _SYMBOLS:
        text = pattern.sub(words, text)
    return text


STEPS: tuple[Callable[[str], str], ...] = (clean, expand_abbreviations, expand_numbers, expand_symbols)


def _int(number: str) -> int:
    return int(number.replace(",", ""))


def _number(whole: str, fraction: str | None, *, as_year: bool = False) -> str:
    """A number's words: leading-zero strings digit by digit, years, cardinals, "point" decimals."""
    if len(whole) > 1 and whole.startswith("0") and "," not in whole:
        words = digits(whole)
    elif as_year and "," not in whole and fraction is None and 1100 <= int(whole) <= 2099:
        words = year(int(whole))
    else:
        words = cardinal(_int(whole))
    return f"{words} point {digits(fraction)}" if fraction else words


def _currency(m: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _UNITS[m[1]]
    whole, fraction, scale = _int(m[2]), m[3], m[4]
    if scale or (fraction is not None and len(fraction) != 2):
        return f"{_number(m[2], fraction)}{' ' + scale if scale else ''} {many}"
    cents = int(fraction or 0)
    parts = [f"{cardinal(whole)} {one if whole == 1 else many}"] if whole or not cents else []
    if cents:
        parts.append(f"{cardinal(cents)} {sub_one if cents == 1 else sub_many}")
    return " and ".join(parts)


def _time(m: re.Match[str]) -> str:
    """5:30 -> "five thirty", 5:05 -> "five oh five", 5:00 -> "five o'clock" (or "five" before A M / P M)."""
    hour, minutes = cardinal(int(m[1])), int(m[2])
    if minutes == 0:
        meridiem_follows = re.match(r"\s?[AP] M\b", m.string[m.end() :]) is not None
        return hour if meridiem_follows else f"{hour} o'clock"
    return f"{hour} oh {ONES[minutes]}" if minutes < 10 else f"{hour} {cardinal(minutes)}"


def _decade(m: re.Match[str]) -> str:
    """1980s -> "nineteen eighties", 1900s -> "nineteen hundreds", '90s and 90s -> "nineties"."""
    if m[1]:
        return plural(year(int(m[1] + m[2])))
    return plural(cardinal(int(m[3])))


def _roman(numeral: str) -> int:
    values = [_ROMAN_VALUES[ch] for ch in numeral]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))


def _plain(m: re.Match[str]) -> str:
    sign, whole, fraction, letter_after = m[1], m[2], m[3], m[4]
    words = _number(whole, fraction, as_year=sign is None)
    return ("minus " if sign else "") + words + (" " if letter_after else "")
