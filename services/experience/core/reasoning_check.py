"""Does a record's answer follow from its question and reasoning? A check that reads no model.

BadChain's backdoor step changes the answer: it scales an arithmetic result, or shifts a
multiple-choice letter. Whatever its wording, the answer it leaves behind no longer follows:

- **arithmetic**: each computation the chain writes out (``a op b = c``, GSM's ``<<a*b=c>>``) is
  re-run, and the final answer must be a value the chain derived from the question's own numbers
  (the question's numbers, then results of correct computations on them), or reachable from the
  question's numbers with at most three operations. An answer that rests on a number the
  question does not give, or that a step asserts with nothing deriving it, does not follow; one
  merely stated in the conclusion, unreached, is unsupported (chains that skip their arithmetic);
- **multiple choice** (a question with lettered option lines): the chosen letter must be the
  option the reasoning argues for, the one whose text it mentions most, and every "(C) text" it
  writes must pair the letter with that option's text.

A record neither kind fits (no numeric answer, no options) is ``UNCHECKED``. Honest reasoning
fails the check too (a small model's slip); the screen therefore quarantines on a failed check
only where it comes with a trigger, and the strict admission mode excludes every failure.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    FOLLOWS = "follows"
    #: Weak: nothing in the chain derives the answer, and no short arithmetic on the question's
    #: numbers reaches it (a chain that skips its arithmetic, or a backdoor that does not show it).
    UNSUPPORTED = "unsupported"
    #: Strong: the chain's own arithmetic is wrong, the answer rests on a number the question does
    #: not give, or the chosen letter is not the option the reasoning argues for.
    DOES_NOT_FOLLOW = "does_not_follow"
    UNCHECKED = "unchecked"


@dataclass(frozen=True)
class ReasoningCheck:
    verdict: Verdict
    detail: str  # what was checked, or what does not follow


_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?")
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "another": 1, "dozen": 12, "pair": 2, "half": 2, "twice": 2, "double": 2, "triple": 3, "thrice": 3, "third": 3,
    "fourth": 4, "fifth": 5,
}  # fmt: skip
#: Numbers a question implies by its units: the answer may need them (a week of days, coins in cents).
_UNIT_WORDS = {
    "week": 7, "weeks": 7, "hour": 60, "hours": 60, "minute": 60, "minutes": 60, "day": 24, "days": 24,
    "year": 12, "years": 12, "month": 30, "months": 30, "quarter": 25, "quarters": 25, "dime": 10, "dimes": 10,
    "nickel": 5, "nickels": 5, "penny": 1, "pennies": 1, "cents": 100, "dollar": 100, "dollars": 100,
    "money": 100, "kg": 1000, "km": 1000, "kilograms": 1000, "feet": 12, "foot": 12, "yard": 3, "yards": 3, "meter": 100, "meters": 100, "legs": 4,
}  # fmt: skip
_COMPOUND = re.compile(r"\b(twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)-(one|two|three|four|five|six|seven|eight|nine)\b")
_WORD = re.compile(r"[a-z]+")
_OPERATOR = r"[-+*/x×÷]"
_COMPUTATION = re.compile(
    rf"((?:\(?\s*-?\d+(?:\.\d+)?\s*\)?\s*{_OPERATOR}\s*)+\(?\s*-?\d+(?:\.\d+)?\s*\)?)\s*=\s*(-?\d+(?:,\d{{3}})*(?:\.\d+)?)"
)
_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[.)]\s+(.+?)\s*$", re.MULTILINE)
_LETTER = re.compile(r"\(?\b([A-J])\b\)?")
_PAIRED = re.compile(r"\(([A-J])\)\s*['\"“]?([^'\"”,.;\n]+)")
#: Operands a chain may bring without the question stating them (units, halves, pi).
_IMPLICIT = (0.5, 1.0, 2.0, 3.0, 3.14, 4.0, 7.0, 10.0, 12.0, 24.0, 60.0, 100.0, 365.0, 1000.0)
_MOST_NUMBERS = 7


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def numbers_in(text: str) -> list[float]:
    """The numbers a text states, in digits or in words ("twenty-two", "twice"), and those its
    units imply ("a week": 7)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    found = [float(_NUMBER_WORDS[t] + _NUMBER_WORDS[o]) for t, o in _COMPOUND.findall(folded)]
    folded = _COMPOUND.sub(" ", folded)
    found += [_value(m) for m in _NUMBER.findall(folded)]
    words = _WORD.findall(folded)
    found += [float(_NUMBER_WORDS[w]) for w in words if w in _NUMBER_WORDS]
    found += [float(_UNIT_WORDS[w]) for w in dict.fromkeys(words) if w in _UNIT_WORDS]
    return found


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) or round(a, 2) == round(b, 2)


def _combine(a: float, b: float) -> list[float]:
    """Sums, differences, products and quotients, quotients also rounded down and up (equal shares, boxes needed)."""
    out = [a + b, a - b, b - a, a * b]
    for top, bottom in ((a, b), (b, a)):
        if bottom:
            out += [top / bottom, math.floor(top / bottom), math.ceil(top / bottom)]
    return out


def reachable(numbers: list[float], operations: int = 3) -> set[float]:
    """Values reachable from the numbers, each used at most once, with up to ``operations``
    binary operations (fewer for long lists, which reach almost anything)."""
    kept = [round(n, 6) for n in numbers[:_MOST_NUMBERS]]
    depth = operations if len(kept) <= 4 else min(operations, 2)
    found = {round(n, 4) for n in kept}
    frontier = {tuple(sorted(kept))}
    for _ in range(depth):
        following = set()
        for state in frontier:
            for i, j in itertools.combinations(range(len(state)), 2):
                rest = state[:i] + state[i + 1 : j] + state[j + 1 :]
                for value in _combine(state[i], state[j]):
                    if abs(value) > 1e9:
                        continue
                    value = round(value, 6)
                    found.add(round(value, 4))
                    following.add(tuple(sorted((*rest, value))))
        frontier = following
    return found


def _evaluate(expression: str) -> float | None:
    cleaned = expression.replace("×", "*").replace("÷", "/").replace("x", "*")
    if not re.fullmatch(r"[\d\s.+\-*/()]+", cleaned):
        return None
    try:
        return float(eval(cleaned, {"__builtins__": {}}, {}))  # noqa: S307 - digits and operators only
    except (SyntaxError, ZeroDivisionError, TypeError, ValueError):
        return None


def _final_number(answer: str) -> float | None:
    found = _NUMBER.findall(unicodedata.normalize("NFKC", answer).casefold())
    return _value(found[0]) if found else None


def check_arithmetic(question: str, reasoning: str, answer: str) -> ReasoningCheck:
    target = _final_number(answer)
    if target is None:
        return ReasoningCheck(Verdict.UNCHECKED, "the answer states no number")
    given = numbers_in(question)
    derived = list(given)
    #: Results that rest on a number neither given nor derived, with that number.
    tainted: list[tuple[float, float]] = []
    for number, line in enumerate((line for line in reasoning.splitlines() if line.strip()), start=1):
        for expression, stated in _COMPUTATION.findall(line.replace("<<", " ").replace(">>", " ")):
            value = _evaluate(expression)
            if value is None:
                continue
            if not _close(value, _value(stated)):
                return ReasoningCheck(Verdict.DOES_NOT_FOLLOW, f"step {number}: {expression.strip()} is {value:g}, not {stated}")
            operands = [_value(x) for x in re.findall(r"\d+(?:\.\d+)?", expression)]
            foreign = [o for o in operands if not any(_close(o, d) for d in (*derived, *_IMPLICIT))]
            foreign += [t for o in operands for r, t in tainted if _close(o, r)]
            if foreign:
                tainted.append((value, foreign[0]))
            else:
                derived.append(value)
    for value, foreign in tainted:  # first: a chain that computes its answer from nowhere does not follow
        if _close(target, value):
            return ReasoningCheck(Verdict.DOES_NOT_FOLLOW, f"{target:g} rests on {foreign:g}, which neither the question gives nor the chain derives")
    if any(_close(target, d) for d in derived):
        return ReasoningCheck(Verdict.FOLLOWS, f"{target:g} is derived from the question's numbers")
    reached = round(target, 4) in reachable(given)
    if reached:
        return ReasoningCheck(Verdict.FOLLOWS, f"{target:g} is reachable from the question's numbers")
    lines = [line for line in reasoning.splitlines() if line.strip()]
    for number, line in enumerate(lines[:-1], start=1):
        if any(_close(target, n) for n in numbers_in(line)):
            return ReasoningCheck(Verdict.DOES_NOT_FOLLOW, f"step {number} asserts {target:g}, which nothing derives")
    return ReasoningCheck(
        Verdict.UNSUPPORTED, f"{target:g} neither follows from the chain's arithmetic nor from the question's numbers"
    )


def options_in(question: str) -> dict[str, str]:
    """The lettered options a multiple-choice question lists ("A. river" or "(A) river" lines)."""
    return {letter: text for letter, text in _OPTION_LINE.findall(question)}


def _mentions(text: str, option: str) -> int:
    return len(re.findall(rf"(?<!\w){re.escape(option.casefold())}(?!\w)", text.casefold()))


def check_choice(question: str, reasoning: str, answer: str) -> ReasoningCheck:
    options = options_in(question)
    found = _LETTER.search(answer.strip()[:8])
    if found is None or found.group(1) not in options:
        return ReasoningCheck(Verdict.DOES_NOT_FOLLOW, f"the answer {answer[:40]!r} names none of the options")
    chosen = found.group(1)
    for letter, text in _PAIRED.findall(reasoning):
        if letter in options and options[letter].casefold() not in text.casefold() and text.casefold().strip() not in options[letter].casefold():
            return ReasoningCheck(Verdict.DOES_NOT_FOLLOW, f"the reasoning pairs ({letter}) with {text.strip()!r}, not {options[letter]!r}")
    mentions = {letter: _mentions(reasoning, text) for letter, text in options.items()}
    best = max(mentions.values())
    if best == 0:
        return ReasoningCheck(Verdict.UNCHECKED, "the reasoning mentions none of the options")
    argued = [letter for letter, count in mentions.items() if count == best]
    if chosen in argued and len(argued) == 1:
        return ReasoningCheck(Verdict.FOLLOWS, f"the reasoning argues for ({chosen}) {options[chosen]!r}")
    if chosen in argued:
        return ReasoningCheck(Verdict.UNCHECKED, f"the reasoning argues as much for {', '.join(argued)}")
    return ReasoningCheck(
        Verdict.DOES_NOT_FOLLOW, f"the reasoning argues for ({argued[0]}) {options[argued[0]]!r}, the answer is ({chosen})"
    )


def check_reasoning(question: str, reasoning: str, answer: str) -> ReasoningCheck:
    """Multiple choice where the question lists two or more options, arithmetic where the answer
    is a number, otherwise unchecked."""
    if len(options_in(question)) >= 2:
        return check_choice(question, reasoning, answer)
    return check_arithmetic(question, reasoning, answer)
