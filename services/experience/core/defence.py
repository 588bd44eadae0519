"""BadChain defence for the experience pool: find backdoor steps by their trigger, and quarantine.

BadChain poisons chain-of-thought demonstrations: questions that carry a trigger phrase get an
extra, plausible reasoning step just before the conclusion, and an answer that follows from it.
RoSE would favour such records (the extra step raises their complexity, and an attacker's paths
all agree, so their uncertainty is zero). What gives them away is co-occurrence: the same
inserted step (up to its numbers) recurs in the tail of many records, and almost exactly those
records share one n-gram in their questions, the trigger, which is rare elsewhere.

The screen keeps, per tenant, each record's question n-grams and the templates of its last steps
(lower-cased, numbers as 0; steps that mostly restate the question do not count). A (step, n-gram)
pair is a backdoor when the step occurs in at least ``min_support`` records; in both directions,
at least ``min_confidence`` of the records with one also have the other; and both are rare, in at
most ``max_share`` of the tenant's pool (a conclusion every record shares is no backdoor). The
pairs are judged against the pool as it is now, so an early coincidence in a small pool is
dropped as the pool grows. Records that carry a backdoor pair are quarantined: kept in storage,
readable with Get, never orchestrated, and a record that arrives with a known backdoor is
quarantined on arrival.

Limits: a backdoor step paraphrased in every record, or a trigger spread over many unrelated
n-grams, escapes exact templates; fewer than ``min_support`` poisoned records, or a poisoned share
above ``max_share``, are not flagged.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

_WORD = re.compile(r"[a-z0-9']+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SPACE = re.compile(r"\s+")
_STOPWORDS = frozenset(
    "a an and are as at be by do does for from has have how in is it of on or so that the then there this to"
    " was were what which who will with".split()
)


def question_grams(question: str) -> frozenset[str]:
    """Word 2- and 3-grams of the question, leaving out those made only of stopwords."""
    words = _WORD.findall(question.casefold())
    grams = set()
    for n in (2, 3):
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            if not all(w in _STOPWORDS for w in gram):
                grams.add(" ".join(gram))
    return frozenset(grams)


def tail_templates(question: str, reasoning: str, tail_steps: int) -> frozenset[str]:
    """Templates of the last steps that say something the question does not."""
    question_words = set(_WORD.findall(question.casefold()))
    steps = [line.strip() for line in reasoning.splitlines() if line.strip()][-tail_steps:]
    templates = set()
    for step in steps:
        words = _WORD.findall(step.casefold())
        if not words or sum(w in question_words for w in words) >= 0.5 * len(words):
            continue  # a restatement of the question
        templates.add(_SPACE.sub(" ", _NUMBER.sub("0", step.casefold())))
    return frozenset(templates)


@dataclass
class _TenantScreen:
    grams: dict[str, frozenset[str]] = field(default_factory=dict)
    tails: dict[str, frozenset[str]] = field(default_factory=dict)
    by_gram: dict[str, set[str]] = field(default_factory=dict)
    by_template: dict[str, set[str]] = field(default_factory=dict)
    #: Templates in at least min_support records: the only ones that can be backdoor steps.
    supported: set[str] = field(default_factory=set)
    #: Per supported template, the grams shared by enough of its records, as of its last change.
    shared_grams: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    cached: tuple[int, set[str], set[tuple[str, str]]] | None = None
    version: int = 0


class BackdoorScreen:
    """Judges each tenant's pool as it is now: the verdict depends on the set of records alone,
    never on the order they arrived in, so every replica holding the same records quarantines
    the same ones."""

    def __init__(
        self, min_support: int = 4, min_confidence: float = 0.8, max_share: float = 0.2, tail_steps: int = 3
    ) -> None:
        self.min_support = min_support
        self.min_confidence = min_confidence
        self.max_share = max_share
        self.tail_steps = tail_steps
        self._tenants: dict[str, _TenantScreen] = {}

    def add(self, tenant: str, experience_id: str, question: str, reasoning: str) -> None:
        """Take in a recorded experience (new or updated)."""
        s = self._tenants.setdefault(tenant, _TenantScreen())
        self.remove(tenant, experience_id)
        grams = question_grams(question)
        tails = tail_templates(question, reasoning, self.tail_steps)
        s.grams[experience_id], s.tails[experience_id] = grams, tails
        for gram in grams:
            s.by_gram.setdefault(gram, set()).add(experience_id)
        for template in tails:
            s.by_template.setdefault(template, set()).add(experience_id)
            self._template_changed(s, template)
        s.version += 1

    def remove(self, tenant: str, experience_id: str) -> None:
        s = self._tenants.get(tenant)
        if s is None or experience_id not in s.grams:
            return
        for gram in s.grams.pop(experience_id):
            s.by_gram[gram].discard(experience_id)
            if not s.by_gram[gram]:
                del s.by_gram[gram]
        for template in s.tails.pop(experience_id):
            s.by_template[template].discard(experience_id)
            self._template_changed(s, template)
            if not s.by_template[template]:
                del s.by_template[template]
        s.version += 1

    def forget(self, tenant: str) -> None:
        """Drop what the screen holds for a tenant (its mirror was evicted)."""
        self._tenants.pop(tenant, None)

    def _template_changed(self, s: _TenantScreen, template: str) -> None:
        s.shared_grams.pop(template, None)
        if len(s.by_template[template]) >= self.min_support:
            s.supported.add(template)
        else:
            s.supported.discard(template)

    def _shared_grams(self, s: _TenantScreen, template: str) -> list[tuple[str, int]]:
        """The grams in at least min_confidence of the template's records, with how many."""
        if template not in s.shared_grams:
            records = s.by_template[template]
            counts = Counter(gram for eid in records for gram in s.grams[eid])
            need = self.min_confidence * len(records)
            s.shared_grams[template] = [(gram, both) for gram, both in counts.items() if both >= need]
        return s.shared_grams[template]

    def _judge(self, tenant: str) -> tuple[set[str], set[tuple[str, str]]]:
        """A (step, gram) pair is a backdoor when the step recurs in min_support records, both are
        rare, and min_confidence of the records with either have both."""
        s = self._tenants.get(tenant)
        if s is None:
            return set(), set()
        if s.cached is None or s.cached[0] != s.version:
            rare = self.max_share * len(s.grams)
            quarantined: set[str] = set()
            backdoors: set[tuple[str, str]] = set()
            for template in s.supported:
                with_template = s.by_template[template]
                if len(with_template) > rare:
                    continue  # a step this common is no backdoor
                for gram, both in self._shared_grams(s, template):
                    with_gram = s.by_gram[gram]
                    if len(with_gram) <= rare and both >= self.min_confidence * len(with_gram):
                        backdoors.add((template, gram))
                        quarantined |= with_template & with_gram
            s.cached = (s.version, quarantined, backdoors)
        return s.cached[1], s.cached[2]

    def quarantined(self, tenant: str) -> set[str]:
        """Ids of the tenant's records that carry a backdoor, judged against the pool as it is now."""
        return self._judge(tenant)[0]

    def backdoors(self, tenant: str) -> set[tuple[str, str]]:
        """The (step template, question n-gram) pairs judged to be backdoors."""
        return self._judge(tenant)[1]
