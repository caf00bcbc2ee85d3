"""English number words: cardinals, ordinals, years and digit strings (American style, no "and":
"one hundred twenty-three"). Small on purpose; ``num2words`` (LGPL) is not used."""

from __future__ import annotations

ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
# Integers at or past this are read digit by digit (serial numbers, not quantities).
MAX_CARDINAL = 10**15
_IRREGULAR_ORDINALS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def cardinal(n: int) -> str:
    """``123`` -> "one hundred twenty-three"; negative numbers get "minus"; huge ones are read digit by digit."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n >= MAX_CARDINAL:
        return digits(str(n))
    if n < 20:
        return ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS[tens] + (f"-{ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{ONES[hundreds]} hundred" + (f" {cardinal(rest)}" if rest else "")
    for value, name in SCALES:
        if n >= value:
            count, rest = divmod(n, value)
            return f"{cardinal(count)} {name}" + (f" {cardinal(rest)}" if rest else "")
    raise AssertionError("unreachable")  # pragma: no cover


def ordinal(n: int) -> str:
    """``21`` -> "twenty-first", ``100`` -> "one hundredth"."""
    words = cardinal(n)
    cut = max(words.rfind(" "), words.rfind("-")) + 1
    head, last = words[:cut], words[cut:]
    if last in _IRREGULAR_ORDINALS:
        return head + _IRREGULAR_ORDINALS[last]
    if last.endswith("y"):
        return head + last[:-1] + "ieth"
    return head + last + "th"


def year(n: int) -> str:
    """A year the way it is said: 1984 -> "nineteen eighty-four", 1905 -> "nineteen oh five",
    1900 -> "nineteen hundred", 2005 -> "two thousand five", 2024 -> "twenty twenty-four"."""
    if n % 1000 == 0 or 2000 <= n < 2010 or not 1000 <= n < 10000:
        return cardinal(n)
    century, rest = divmod(n, 100)
    if rest == 0:
        return f"{cardinal(century)} hundred"
    if rest < 10:
        return f"{cardinal(century)} oh {ONES[rest]}"
    return f"{cardinal(century)} {cardinal(rest)}"


def digits(text: str) -> str:
    """Each digit of ``text`` as a word: "007" -> "zero zero seven"."""
    return " ".join(ONES[int(ch)] for ch in text if ch.isdigit())


def plural(words: str) -> str:
    """The plural of number words, for decades: "nineteen eighty" -> "nineteen eighties"."""
    if words.endswith("y"):
        return words[:-1] + "ies"
    if words.endswith("x"):
        return words + "es"
    return words + "s"
