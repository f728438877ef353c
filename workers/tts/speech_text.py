"""Text made for the ear: an LLM's reply rewritten as a person would read it aloud, before a voice speaks it.

LLMs write markdown, lists, emoji, links, prices and times whatever their prompt says; a voice reads what it is
given ("asterisk asterisk", "h t t p s colon slash slash", an emoji's name, or nothing at all: the MMS voice's
alphabet has no digits). :func:`speech_text` takes one sentence (as :mod:`voicepod.sentences` cuts them: a list
item or a heading is one) and returns what to say:

- markdown's emphasis, headings, code marks, quotes and tables go, a link keeps its words;
- a bullet is read as its words, a numbered item as "First, ...", each ending as a sentence does;
- emoji and symbols with no spoken form go; "&", "%", "+", "=", "°", "#1", "~5" are said;
- prices ("$5.99": "five dollars ninety-nine"), percentages, times ("3:30 pm": "three thirty p m"), dates
  ("2024-03-05", "March 5th", "5 March"), ordinals, years, ranges, fractions, phone numbers (digit by digit, in
  their groups), e-mail addresses ("support at acme dot com") and URLs ("acme dot com slash pricing").

Numbers become words with ``inflect`` (MIT, pure Python) and month names come from :mod:`calendar`. What finds
them is written here, as regular expressions: the text normalisers that know these shapes are either large
grammars with native dependencies (NeMo's, on pynini), GPL (num2words is LGPL; espeak-ng's own rules run inside a
GPL program and only for espeak voices), or parse whole documents where this sees a sentence at a time
(markdown parsers). The rules assume English and a US reader (``3/5/2024`` is March 5th).
"""

from __future__ import annotations

import calendar
import html
import re
import sys
import types
import unicodedata
from collections.abc import Callable
from typing import Any


def _load_inflect() -> Any:
    """inflect's engine, without typeguard.

    inflect decorates its engine's methods with typeguard's ``@typechecked``, which parses inflect's whole source
    again for each of 23 methods when the class is defined (3-11 s on 2 cores: a worker's cold start) and checks
    arguments on every call; importing typeguard itself takes 0.2-0.5 s more. typeguard turns the decorator into a
    no-op under ``python -O``; a worker should not need that flag, so while inflect is imported here its
    ``typeguard`` is a stand-in whose decorator changes nothing (the real module, if already imported, is patched
    for that moment instead).
    """
    loaded = sys.modules.get("typeguard")
    stand_in = loaded or types.ModuleType("typeguard")
    checked = getattr(stand_in, "typechecked", None)
    stand_in.typechecked = lambda target=None, **_: target if target is not None else (lambda t: t)  # type: ignore
    sys.modules["typeguard"] = stand_in
    try:
        import inflect
    finally:
        if loaded is None:
            del sys.modules["typeguard"]
        else:
            loaded.typechecked = checked
    return inflect.engine()


_INFLECT = _load_inflect()

# --- numbers in words -----------------------------------------------------------------------------------------


def number_words(number: str | int) -> str:
    """``number`` ("1,299", "3.5", "-4", 21) in words, as said in US English ("one thousand two hundred
    ninety-nine")."""
    text = str(number).replace(",", "")
    negative = text.startswith("-")
    text = text.lstrip("-+")
    whole, _, fraction = text.partition(".")
    if len(whole) > 1 and whole.startswith("0") or len(whole) > 9:  # "007", an order number: digit by digit
        words = digit_words(whole)
    else:
        words = _INFLECT.number_to_words(int(whole or 0), andword="", comma="")
    if fraction:
        words += " point " + digit_words(fraction)
    return ("minus " if negative else "") + words


def digit_words(digits: str) -> str:
    """Each digit of ``digits`` in words: "555" is "five five five"."""
    return " ".join(_INFLECT.number_to_words(int(d)) for d in digits if d.isdigit())


def ordinal_words(number: int) -> str:
    """21 -> "twenty-first"."""
    return _INFLECT.number_to_words(_INFLECT.ordinal(number), andword="", comma="")


def year_words(year: int) -> str:
    """A year as it is said: 1999 "nineteen ninety-nine", 2005 "two thousand five", 1900 "nineteen hundred"."""
    if 2000 <= year <= 2009 or year < 1000 or year > 9999:
        return number_words(year)
    if year % 100 == 0:
        return f"{number_words(year // 100)} hundred"
    return _INFLECT.number_to_words(year, group=2, andword="").replace(",", "")


def _plural(word: str, count: float) -> str:
    return word if count == 1 else _INFLECT.plural(word)


# --- the rules ------------------------------------------------------------------------------------------------

_MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
_MONTHS |= {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_MONTHS["sept"] = 9
# A whole number: digits, or thousands with their commas ("1,299", but not the "1," of "1, 2").
_INT = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
# A month's name, or its abbreviation with a period when a day or year follows ("Mar. 5"): a period after "March"
# is the sentence's.
_MONTH = (r"(?:" + "|".join(name for name in calendar.month_name if name) + r"|(?:"
          + "|".join([*(name for name in calendar.month_abbr if name), "Sept"]) + r")(?:\.(?=[ \t]*\d))?)")

# Currency symbol -> (unit, subunit).
_CURRENCIES = {"$": ("dollar", "cent"), "€": ("euro", "cent"), "£": ("pound", "penny"), "¥": ("yen", "")}
_SCALES = {"k": "thousand", "m": "million", "mm": "million", "b": "billion", "bn": "billion", "t": "trillion",
           "thousand": "thousand", "million": "million", "billion": "billion", "trillion": "trillion"}
# Latin abbreviations a voice would spell out ("e g").
_ABBREVIATIONS = {"e.g.": "for example", "i.e.": "that is", "etc.": "et cetera", "vs.": "versus"}

_CODE_FENCE = re.compile(r"^[ \t]*(```|~~~).*$", re.M)
_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.M)
_TABLE_DIVIDER = re.compile(r"^[ \t]*\|?[ \t]*:?-{2,}:?[ \t]*(?:\|[ \t]*:?-{2,}:?[ \t]*)*\|?[ \t]*$", re.M)
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+(.*?)[ \t#]*$", re.M)
_QUOTE = re.compile(r"^[ \t]*>[ \t]?", re.M)
_BULLET = re.compile(r"^[ \t]*[-*+•][ \t]+(.*)$", re.M)
_NUMBERED = re.compile(r"^[ \t]*(\d{1,3})[.)][ \t]+(.*)$", re.M)
_TABLE_ROW = re.compile(r"^[ \t]*\|(.*)\|[ \t]*$", re.M)

_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)\s]*(?:\s+\"[^\"]*\")?\)")
_AUTOLINK = re.compile(r"<((?:https?://|mailto:)[^>\s]+)>")
_FOOTNOTE = re.compile(r"\[\^?\d+\]")
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_CODE = re.compile(r"`+([^`]*)`+")
_STRONG = re.compile(r"(\*\*|__|~~)(?=\S)(.+?)(?<=\S)\1")
_EMPHASIS = re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?!\w)|(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)")

_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)(?<![.-])")
_TLD = r"(?:com|org|net|edu|gov|io|ai|dev|app|co|us|uk|ca|de|fr|info|biz|me|tv|ly|gg)"
_URL = re.compile(
    r"(?:https?://|www\.)[^\s<>()\"']+[^\s<>()\"'.,;:!?]"  # with a scheme or www.: up to a closing mark
    rf"|(?<![\w@.-])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.{_TLD}\b(?:/[^\s<>()\"']*[^\s<>()\"'.,;:!?])?",
    re.I,
)
_PHONE = re.compile(
    r"(?<![\w+])(?:(\+?1)[ .-]?)?\(?(\d{3})\)?[ .-]?(\d{3})[ .-](\d{4})(?!\d)"  # North American
    r"|(?<![\w+])(\+\d{1,3}(?:[ .-]\d{1,5}){2,5})(?![\d])"  # international, in groups
)
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_US_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\b")
_MONTH_DAY = re.compile(rf"\b({_MONTH})[ \t]+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?[ \t]+(\d{{4}})\b)?")
_DAY_MONTH = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?[ \t]+(?:of[ \t]+)?({_MONTH})(?:,?[ \t]+(\d{{4}})\b)?")
_MONTH_YEAR = re.compile(rf"\b({_MONTH})[ \t]+(\d{{4}})\b")
# "pm", "p.m.", "PM": the last period is the sentence's own when the sentence ends there.
_AMPM = r"([AaPp])\.?[ \t]?[Mm]\b(?:\.(?![ \t]*(?:$|[A-Z\n])))?"
_TIME = re.compile(rf"\b(\d{{1,2}}):(\d{{2}})(?::\d{{2}})?(?:[ \t]*{_AMPM})?")
_HOUR_AMPM = re.compile(rf"\b(\d{{1,2}})[ \t]?{_AMPM}")
_PRICE = re.compile(
    rf"(?<![\w$€£¥])([-−]?)([$€£¥])[ \t]?({_INT})(?:\.(\d{{1,2}}))?(?!\d)"
    r"(?:[ \t]?(thousand|million|billion|trillion|bn|mm|[kmbt])\b)?",
    re.I,
)
_PERCENT = re.compile(rf"(?<![\w.])([-−]?{_INT}(?:\.\d+)?)[ \t]?%")
_DECADE = re.compile(r"(?<![\w'])'?(1[1-9]|20)?(\d)0s\b")
_YEAR = re.compile(
    r"\b(in|since|by|from|until|till|to|before|after|during|of|year|circa|around|early|late|mid|the|and)"
    r"([ \t]+)(1[1-9]\d\d|20\d\d)\b(?![.,]\d)",
    re.I,
)
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.I)
_FRACTION = re.compile(r"(?<![\w/.])(\d{1,3})/(\d{1,3})(?![\w/])")
_DIMENSIONS = re.compile(r"\b(\d+(?:\.\d+)?)[ \t]?[x×][ \t]?(\d+(?:\.\d+)?)\b")
_RANGE = re.compile(rf"(?<![\w.-])({_INT}(?:\.\d+)?)[ \t]?[-–—][ \t]?({_INT}(?:\.\d+)?)(?![\w.]\d)")
_DEGREES = re.compile(r"°[ \t]?([CF])\b|°")
_NUMBER_SIGN = re.compile(r"#[ \t]?(?=\d)")
_ABOUT = re.compile(r"(?<!\S)~[ \t]?(?=\d)")
_NUMBER = re.compile(rf"(?<![\w.])([-−](?=\d))?({_INT}(?:\.\d+)?)(?!\d)")
_DASH = re.compile(r"[ \t]+[-–—][ \t]+|[ \t]*—[ \t]*")
_SPACES = re.compile(r"[ \t]+")


def _item_end(text: str) -> str:
    """An item or heading said as a sentence: it ends with a full stop unless it ends with a mark already."""
    text = text.strip()
    return text if not text or text[-1] in ".!?:;…" else text + "."


def _lines(text: str) -> str:
    """Markdown's line structure: fences, rules and table dividers go; headings, bullets, numbered items and table
    rows are read as sentences."""
    text = _CODE_FENCE.sub("", text)
    text = _RULE.sub("", text)
    text = _TABLE_DIVIDER.sub("", text)
    text = _HEADING.sub(lambda m: _item_end(m.group(1)), text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub(lambda m: _item_end(m.group(1)), text)
    text = _NUMBERED.sub(lambda m: f"{ordinal_words(int(m.group(1))).capitalize()}, {_item_end(m.group(2))}", text)
    return _TABLE_ROW.sub(lambda m: _item_end(", ".join(c.strip() for c in m.group(1).split("|") if c.strip())),
                          text)


def _inline(text: str) -> str:
    """Inline markdown and HTML: links keep their words, code and emphasis their text."""
    text = html.unescape(text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _AUTOLINK.sub(r"\1", text)
    text = _FOOTNOTE.sub("", text)
    text = _HTML_TAG.sub(" ", text)
    text = _CODE.sub(r"\1", text)
    for _ in range(2):  # "***both***" is emphasis inside strong
        text = _STRONG.sub(r"\2", text)
        text = _EMPHASIS.sub(lambda m: m.group(1) or m.group(2), text)
    # Stray marks: a piece cut inside an emphasis, a bullet mid-line.
    return re.sub(r"\*+|(?<!\w)_+|_+(?!\w)|`+|~~", " ", text)


def _spell(part: str) -> str:
    """A piece of an address, said: dots, dashes and digits in words."""
    words = []
    for token in re.findall(r"[A-Za-z]+|\d+|[.\-_+]", part):
        if token.isdigit():
            words.append(digit_words(token) if len(token) > 4 else number_words(token))
        else:
            words.append({".": "dot", "-": "dash", "_": "underscore", "+": "plus"}.get(token, token))
    return " ".join(words)


def _email(match: re.Match[str]) -> str:
    return f"{_spell(match.group(1))} at {_spell(match.group(2))}"


def _url(match: re.Match[str]) -> str:
    url = re.sub(r"^(?:https?://)?(?:www\.)?", "", match.group(), flags=re.I)
    host, _, path = url.partition("/")
    said = _spell(host.lower())
    segments = [s for s in re.split(r"[?#]", path, maxsplit=1)[0].split("/") if s]
    for segment in segments[:3]:  # a long path is not something to listen to
        said += " slash " + " ".join(re.findall(r"[A-Za-z]+|\d+", segment))
    return said


def _phone(match: re.Match[str]) -> str:
    groups = [g for g in match.groups()[:4] if g] if match.group(4) else re.split(r"[ .-]", match.group(5))
    return ", ".join(("plus " if g.startswith("+") else "") + digit_words(g) for g in groups)


def _price(match: re.Match[str]) -> str:
    sign, symbol, whole, cents, scale = match.groups()
    unit, subunit = _CURRENCIES[symbol]
    minus = "minus " if sign else ""
    if scale:
        amount = whole + (f".{cents}" if cents else "")
        return f"{minus}{number_words(amount)} {_SCALES[scale.lower()]} {_INFLECT.plural(unit)}"
    dollars = int(whole.replace(",", ""))
    pennies = int(cents.ljust(2, "0")) if cents else 0
    if dollars == 0 and pennies and subunit:
        return f"{minus}{number_words(pennies)} {_plural(subunit, pennies)}"
    said = f"{minus}{number_words(whole)} {_plural(unit, dollars)}"
    return f"{said} {number_words(pennies)}" if pennies else said


def _ampm(letter: str | None) -> str:
    return f" {letter.lower()} m" if letter else ""


def _time(match: re.Match[str]) -> str:
    hour, minute, letter = int(match.group(1)), int(match.group(2)), match.group(3)
    if hour > 23 or minute > 59:
        return match.group()
    said = number_words(hour)
    if minute == 0:
        said += "" if letter else (" hundred" if hour >= 13 or hour == 0 else " o'clock")
    elif minute < 10:
        said += f" oh {number_words(minute)}"
    else:
        said += f" {number_words(minute)}"
    return said + _ampm(letter)


def _date(month: int, day: int, year: str | None, day_first: bool = False) -> str:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return ""
    name = calendar.month_name[month]
    said = f"the {ordinal_words(day)} of {name}" if day_first else f"{name} {ordinal_words(day)}"
    if year:
        full = int(year) + (2000 if len(year) == 2 else 0)
        said += f", {year_words(full)}"
    return said


def _dates(text: str) -> str:
    def iso(m: re.Match[str]) -> str:
        return _date(int(m.group(2)), int(m.group(3)), m.group(1)) or m.group()

    def us(m: re.Match[str]) -> str:
        return _date(int(m.group(1)), int(m.group(2)), m.group(3)) or m.group()

    def month_day(m: re.Match[str]) -> str:
        return _date(_MONTHS[m.group(1).rstrip(".").lower()], int(m.group(2)), m.group(3)) or m.group()

    def day_month(m: re.Match[str]) -> str:
        month = _MONTHS[m.group(2).rstrip(".").lower()]
        return _date(month, int(m.group(1)), m.group(3), day_first=True) or m.group()

    def month_year(m: re.Match[str]) -> str:
        return f"{calendar.month_name[_MONTHS[m.group(1).rstrip('.').lower()]]} {year_words(int(m.group(2)))}"

    for pattern, say in ((_ISO_DATE, iso), (_US_DATE, us), (_MONTH_DAY, month_day), (_DAY_MONTH, day_month),
                         (_MONTH_YEAR, month_year)):
        text = pattern.sub(say, text)
    return text


def _decade(match: re.Match[str]) -> str:
    century, tens = match.group(1), int(match.group(2))
    if tens == 0:  # "1900s", "2000s"
        if not century:
            return match.group()
        return "two thousands" if century == "20" else f"{number_words(century)} hundreds"
    word = _INFLECT.plural(number_words(tens * 10))  # "nineties"
    return f"{number_words(century)} {word}" if century else word


def _fraction(match: re.Match[str]) -> str:
    top, bottom = int(match.group(1)), int(match.group(2))
    if not 0 < top < bottom <= 16:  # "24/7", "50/50": said as two numbers
        return f"{number_words(top)} {number_words(bottom)}"
    name = {2: "half", 4: "quarter"}.get(bottom) or ordinal_words(bottom)
    return f"{number_words(top)} {_INFLECT.plural(name) if top > 1 else name}"


def _range(match: re.Match[str]) -> str:
    ends = match.group(1), match.group(2)
    if all(re.fullmatch(r"1[1-9]\d\d|20\d\d", end) for end in ends):  # "1990-1999"
        return " to ".join(year_words(int(end)) for end in ends)
    return " to ".join(number_words(end) for end in ends)


def _symbols(text: str) -> str:
    """Symbols that are said, then every other symbol and emoji dropped."""
    text = _DEGREES.sub(lambda m: {"C": " degrees Celsius", "F": " degrees Fahrenheit"}.get(m.group(1) or "",
                                                                                             " degrees"), text)
    text = _NUMBER_SIGN.sub("number ", text)
    text = _ABOUT.sub("about ", text)
    for symbol, word in (("&", " and "), ("+", " plus "), ("=", " equals "), ("@", " at ")):
        text = text.replace(symbol, word)
    text = _DASH.sub(", ", text)
    text = re.sub(r"[ \t]*[()][ \t]*", ", ", text)  # an aside in brackets is said as one between commas
    return "".join(_spoken_char(ch) for ch in text)


def _spoken_char(ch: str) -> str:
    if ch.isalnum() or ch.isspace() or ch in ".,;:!?'\"’‘“”-…":
        return ch
    category = unicodedata.category(ch)
    # What modifies the character before it: emoji skin tones (Sk), variation selectors, keycaps (Me), joiners
    # (Cf). It goes with no trace; accents (other Mn) stay.
    if category in ("Sk", "Me", "Cf") or "\ufe00" <= ch <= "\ufe0f":
        return ""
    if category == "Mn":
        return ch
    # Emoji and pictographs (So), math and arrows (Sm), currency without an amount (Sc), other punctuation
    # (/, |, *, ...), private and unassigned code points: nothing a voice should say. A space keeps the words on
    # either side apart.
    return " "


def _tidy(text: str) -> str:
    text = _SPACES.sub(" ", text.replace("\n", " ").replace("\r", " "))
    text = re.sub(r"\s+([,.;:!?…])", r"\1", text)
    text = re.sub(r",(?=\w)", ", ", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"[,;:]\s*([.!?])", r"\1", text)
    text = re.sub(r"([.!?])\s+\.(?!\.)", r"\1", text)
    return text.strip(" ,;")


_STEPS: tuple[Callable[[str], str], ...] = (
    _lines,
    _inline,
    lambda t: _EMAIL.sub(_email, t),
    lambda t: _URL.sub(_url, t),
    lambda t: _PHONE.sub(_phone, t),
    _dates,
    lambda t: _PRICE.sub(_price, t),
    lambda t: _PERCENT.sub(lambda m: f"{number_words(m.group(1).replace('−', '-'))} percent", t),
    lambda t: _TIME.sub(_time, t),
    lambda t: _HOUR_AMPM.sub(lambda m: number_words(m.group(1)) + _ampm(m.group(2)), t),
    lambda t: _DECADE.sub(_decade, t),
    lambda t: _RANGE.sub(_range, t),
    lambda t: _YEAR.sub(lambda m: f"{m.group(1)}{m.group(2)}{year_words(int(m.group(3)))}", t),
    lambda t: _ORDINAL.sub(lambda m: ordinal_words(int(m.group(1))), t),
    lambda t: _FRACTION.sub(_fraction, t),
    lambda t: _DIMENSIONS.sub(lambda m: f"{number_words(m.group(1))} by {number_words(m.group(2))}", t),
    lambda t: re.sub(r"(?<!\w)(?:e\.g\.|i\.e\.|etc\.|vs\.)", lambda m: _ABBREVIATIONS[m.group().lower()], t,
                     flags=re.I),
    _symbols,
    lambda t: _NUMBER.sub(lambda m: ("minus " if m.group(1) else "") + number_words(m.group(2)), t),
    _tidy,
)


def speech_text(text: str) -> str:
    """``text`` (a sentence, a list item, a heading, or a few of them) as a person would say it: see the module
    docstring for what changes. Text with nothing to say comes back empty (or only punctuation)."""
    for step in _STEPS:
        text = step(text)
    return text
