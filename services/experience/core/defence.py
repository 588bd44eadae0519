"""BadChain defence for the experience pool: signals that do not depend on the attack's wording.

BadChain poisons chain-of-thought demonstrations: questions that carry a trigger get a backdoor
step (scale the result, shift the letter) and the answer that follows from it. RoSE would
favour such records: the step raises their complexity, and an attacker's paths all agree. The
trigger, the step's wording and its place in the chain are the attacker's to choose; what the
attack cannot avoid is that its records' reasoning is wrong in the same way, for questions that
share a trigger. The screen therefore combines signals of different kinds:

- **the reasoning does not follow** (``reasoning_check``): the answer is not what the chain's
  arithmetic, or the option it argues for, gives (an answer merely unsupported, stated without
  arithmetic that reaches it, is no signal: which questions get such chains depends on their
  kind and topic, so it would mark topic words as triggers);
- **a step shared across unrelated questions**: a step that states a number or an option letter
  (as a step that changes the answer must) whose embedding is within
  ``step_similarity`` of steps in at least ``min_support - 1`` other records whose questions are
  unrelated (question cosine below ``related_question``), yet in at most ``max_step_share`` of the
  pool (a conclusion every record shares is no backdoor);
- **a question feature they co-occur with**: a record with either signal is *anomalous*. A
  question feature (a token or pair of adjacent tokens, over all of Unicode: words, digits, each
  run of punctuation, symbols or emoji, invisible format characters) is a trigger when at least
  ``min_support`` anomalous records carry it and chance alone is unlikely to concentrate them
  so: both the hypergeometric tail of that count and its binomial tail at a floor anomaly rate
  are below ``alpha``. Diluting a trigger with
  clean records lowers the rate only as fast as the attacker pays for the clean records.

Anomalous records that carry a trigger are quarantined: kept in storage, readable with Get,
never orchestrated. Honest mistakes fail the reasoning check too, but they share no trigger, so
they stay; the ``checked`` admission (hardening) excludes every record that fails either check.

The verdict is a function of the stored records alone (their text, question vector and stored
step codes, compared with exact integer dot products), never of arrival order: every replica
holding the same records quarantines the same ones.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from scipy.stats import binom, hypergeom

from services.experience.core.experience import ScreenEvidence
from services.experience.core.reasoning_check import ReasoningCheck, Verdict, check_reasoning

log = logging.getLogger(__name__)

#: Step codes are unit vectors scaled to int8: dot products of codes are exact integers in float32.
CODE_SCALE = 127
#: Steps of one record that are embedded and compared; a longer chain's later steps go unscreened.
MAX_STEPS = 48
_TOKEN = re.compile(r"[^\W_]+|(?:[^\w\s]|_)+")
_WORD = re.compile(r"[^\W_]+")
_BEARS_ANSWER = re.compile(r"\d|\([A-J]\)|\b[A-J][.)](?!\w)")
_CONCLUSION = frozenset("so the answer is therefore thus final hence correct option choice =".split())


def tokens(text: str) -> list[str]:
    """Unicode tokens: runs of letters and digits, and each run of anything else that is not
    space (punctuation, symbols, emoji, zero-width characters), after NFKC and case folding."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def question_features(question: str) -> frozenset[str]:
    """Each token and each pair of adjacent tokens."""
    found = tokens(question)
    return frozenset(found) | frozenset(f"{a} {b}" for a, b in zip(found, found[1:], strict=False))


def content_steps(question: str, reasoning: str) -> list[str]:
    """The steps that could carry a backdoor: they state a number or an option letter (a step
    that changes the answer must), and are neither a restatement of the question (70% of their
    words or more, numbers aside, are the question's) nor a bare conclusion ("So the answer is 12.")."""
    question_words = set(_WORD.findall(unicodedata.normalize("NFKC", question).casefold()))
    steps = []
    for line in reasoning.splitlines():
        words = [w for w in _WORD.findall(unicodedata.normalize("NFKC", line).casefold()) if not w.isdigit()]
        if not words or sum(w in question_words for w in words) >= 0.7 * len(words):
            continue
        if all(w in _CONCLUSION or len(w) == 1 for w in words) or not _BEARS_ANSWER.search(line):
            continue
        steps.append(line.strip())
    return steps[:MAX_STEPS]


def evidence_for(question: str, reasoning: str, answer: str, step_vectors: np.ndarray) -> ScreenEvidence:
    """The evidence stored with a record: its reasoning check, and its content steps' unit
    embeddings (``step_vectors``, one row per ``content_steps``) as int8 codes."""
    check = check_reasoning(question, reasoning, answer)
    codes = b""
    if len(step_vectors):
        unit = step_vectors / np.maximum(np.linalg.norm(step_vectors, axis=1, keepdims=True), 1e-12)
        codes = np.clip(np.rint(unit * CODE_SCALE), -CODE_SCALE, CODE_SCALE).astype(np.int8).tobytes()
    return ScreenEvidence(check.verdict.value, check.detail, codes, len(step_vectors))


class Admission(StrEnum):
    #: Every record the screen does not quarantine enters orchestration.
    SCREENED = "screened"
    #: Also not records whose reasoning does not follow, or that share a step across unrelated questions.
    CHECKED = "checked"
    #: Only records whose answer the check finds to follow, sharing no step across unrelated questions.
    VERIFIED = "verified"
    #: None (an untrusted writer's records, where the operator trusts named writers only).
    NEVER = "never"


_STRICT = frozenset({Admission.CHECKED, Admission.VERIFIED})


@dataclass(frozen=True)
class ScreenSettings:
    min_support: int = 4
    alpha: float = 1e-6
    #: Floor of the anomaly rate the binomial test assumes.
    base_rate_floor: float = 0.02
    step_similarity: float = 0.8
    related_question: float = 0.6
    max_step_share: float = 0.35
    #: Records per tenant up to which the step signal runs (its cost grows with the pool squared).
    step_screen_max_records: int = 20_000
    admission: Admission = Admission.SCREENED
    #: Writers whose records follow ``admission``; when given, every other writer's follow
    #: ``untrusted_admission``. Empty: every writer is trusted.
    trusted_writers: frozenset[str] = frozenset()
    untrusted_admission: Admission = Admission.VERIFIED


@dataclass(frozen=True)
class RecordVerdict:
    """What the screen found about one record, and whether it may be orchestrated."""

    check: ReasoningCheck
    shared_step: str | None  # a step shared with unrelated questions
    trigger: str | None  # the question feature its anomaly co-occurs with
    writer: str
    trusted: bool
    admitted: bool
    why: str

    @property
    def fails_checked_admission(self) -> bool:
        return self.check.verdict is Verdict.DOES_NOT_FOLLOW or self.shared_step is not None


@dataclass
class _Entry:
    features: frozenset[str]
    check: ReasoningCheck
    question_vector: np.ndarray
    steps: list[str]
    rows: list[int]
    writer: str


@dataclass
class _TenantScreen:
    entries: dict[str, _Entry] = field(default_factory=dict)
    by_feature: dict[str, set[str]] = field(default_factory=dict)
    codes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    owner: list[str | None] = field(default_factory=list)
    free: list[int] = field(default_factory=list)
    #: Per step row, the other records (unrelated questions) with a step near it, and how many such pairs.
    neighbours: dict[int, Counter[str]] = field(default_factory=dict)
    version: int = 0
    #: (version, verdicts, quarantined, excluded, trigger features) as of that version.
    cached: tuple[int, dict[str, RecordVerdict], set[str], set[str], set[str]] | None = None


class BackdoorScreen:
    """Judges each tenant's pool as it is now, from its stored records alone."""

    def __init__(self, settings: ScreenSettings | None = None) -> None:
        self.settings = settings or ScreenSettings()
        self._tenants: dict[str, _TenantScreen] = {}

    # -- records in and out -----------------------------------------------------------------

    def add(
        self,
        tenant: str,
        experience_id: str,
        question: str,
        reasoning: str,
        answer: str,
        question_vector: np.ndarray,
        evidence: ScreenEvidence | None,
        writer: str = "",
    ) -> None:
        """Take in a recorded experience (new or updated) with the evidence stored with it; a
        record stored without evidence is checked now and its steps go unscreened."""
        s = self._tenants.setdefault(tenant, _TenantScreen())
        self.remove(tenant, experience_id)
        vector = np.asarray(question_vector, dtype=np.float32)
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        steps = content_steps(question, reasoning)
        codes = np.zeros((0, 0), dtype=np.int8)
        if evidence is None:
            check = check_reasoning(question, reasoning, answer)
        else:
            check = ReasoningCheck(Verdict(evidence.check), evidence.check_detail)
            if evidence.step_count:
                codes = np.frombuffer(evidence.step_codes, dtype=np.int8).reshape(evidence.step_count, -1)
        entry = _Entry(question_features(question), check, vector, steps, [], writer)
        s.entries[experience_id] = entry
        for feature in entry.features:
            s.by_feature.setdefault(feature, set()).add(experience_id)
        if len(codes) and len(s.entries) <= self.settings.step_screen_max_records:
            self._add_steps(s, experience_id, entry, np.asarray(codes[: len(steps)], dtype=np.float32))
        s.version += 1

    def remove(self, tenant: str, experience_id: str) -> None:
        s = self._tenants.get(tenant)
        if s is None or experience_id not in s.entries:
            return
        entry = s.entries.pop(experience_id)
        for feature in entry.features:
            s.by_feature[feature].discard(experience_id)
            if not s.by_feature[feature]:
                del s.by_feature[feature]
        for row in entry.rows:
            for other in s.neighbours.pop(row, Counter()):
                for other_row in s.entries[other].rows:
                    s.neighbours[other_row].pop(experience_id, None)
            s.owner[row] = None
            s.free.append(row)
        s.version += 1

    def forget(self, tenant: str) -> None:
        """Drop what the screen holds for a tenant (its mirror was evicted)."""
        self._tenants.pop(tenant, None)

    def _add_steps(self, s: _TenantScreen, eid: str, entry: _Entry, codes: np.ndarray) -> None:
        if s.codes.shape[1:] != codes.shape[1:]:
            s.codes = np.zeros((0, codes.shape[1]), dtype=np.float32)
        rows = []
        for code in codes:
            if s.free:
                row = s.free.pop()
            else:
                row = len(s.owner)
                s.owner.append(None)
                if row >= len(s.codes):
                    grown = np.zeros((max(64, 2 * len(s.codes)), codes.shape[1]), dtype=np.float32)
                    grown[: len(s.codes)] = s.codes
                    s.codes = grown
            s.codes[row] = code
            s.owner[row] = eid
            s.neighbours[row] = Counter()
            rows.append(row)
        entry.rows = rows
        live = np.array([r for r, o in enumerate(s.owner) if o is not None and o != eid], dtype=np.int64)
        if not len(live):
            return
        threshold = self.settings.step_similarity * CODE_SCALE * CODE_SCALE
        near = (s.codes[live] @ s.codes[rows].T) >= threshold  # exact: integer products below 2**24
        for i, j in zip(*np.nonzero(near), strict=True):
            other_row, row = int(live[i]), rows[j]
            other = s.owner[other_row]
            assert other is not None
            if float(s.entries[other].question_vector @ entry.question_vector) >= self.settings.related_question:
                continue  # related questions may share their steps
            s.neighbours[row][other] += 1
            s.neighbours[other_row][eid] += 1

    # -- the verdict ------------------------------------------------------------------------

    def _shared_step(self, s: _TenantScreen, entry: _Entry) -> str | None:
        most = self.settings.max_step_share * len(s.entries)
        for row, step in zip(entry.rows, entry.steps, strict=False):
            if self.settings.min_support - 1 <= len(s.neighbours[row]) <= most:
                return step
        return None

    def _tail(self, hits, carriers, anomalous: int, total: int):
        """How likely chance alone puts ``hits`` of the ``anomalous`` records among ``carriers``
        of ``total``: the hypergeometric tail (the feature is where the anomalies concentrate),
        and at least the binomial tail at the floor rate (a handful of honest slips that share a
        topic word is no trigger)."""
        return np.maximum(
            hypergeom.sf(np.asarray(hits) - 1, total, anomalous, carriers),
            binom.sf(np.asarray(hits) - 1, carriers, self.settings.base_rate_floor),
        )

    def _associations(self, s: _TenantScreen, anomalous: set[str]) -> list[tuple[float, str]]:
        """(binomial tail, feature) for each question feature the anomalous records carry more
        often than their rate in the pool makes likely."""
        counts = Counter(f for eid in anomalous for f in s.entries[eid].features)
        candidates = sorted(f for f, hits in counts.items() if hits >= self.settings.min_support)
        if not candidates:
            return []
        hits = np.array([counts[f] for f in candidates])
        carriers = np.array([len(s.by_feature[f]) for f in candidates])
        tails = self._tail(hits, carriers, len(anomalous), len(s.entries))
        return [(float(t), f) for t, f in zip(tails, candidates, strict=True) if t <= self.settings.alpha]

    def _judge(self, tenant: str) -> tuple[dict[str, RecordVerdict], set[str], set[str]]:
        s = self._tenants.get(tenant)
        if s is None:
            return {}, set(), set()
        if s.cached is not None and s.cached[0] == s.version:
            return s.cached[1], s.cached[2], s.cached[3]
        cfg = self.settings
        shared = {eid: self._shared_step(s, e) for eid, e in s.entries.items()}
        signals = {
            "reasoning does not follow": {eid for eid, e in s.entries.items() if e.check.verdict is Verdict.DOES_NOT_FOLLOW},
            "step shared across unrelated questions": {eid for eid, step in shared.items() if step is not None},
        }
        found = [(p, f, signal) for signal, anomalous in signals.items() for p, f in self._associations(s, anomalous)]
        # Strongest first; a feature counts only for the anomalous records a stronger one has not
        # explained already (a common word beside the trigger is no second trigger).
        explained: set[str] = set()
        triggers: dict[str, str] = {}
        markers = set()
        for _, _, feature, signal in sorted((p, f.count(" "), f, signal) for p, f, signal in found):  # tokens before pairs
            anomalous = signals[signal]
            carriers = s.by_feature[feature]
            left = (carriers & anomalous) - explained
            tail = self._tail(len(left), len(carriers - explained), len(anomalous - explained), len(s.entries) - len(explained))
            # A feature whose anomalies a stronger one explained is a trigger too when it is carried
            # by nearly the same records as a trigger, or mostly by anomalous ones: a trigger's
            # other tokens, not a common word beside it.
            alike = len(carriers & anomalous) >= cfg.min_support and (
                len(carriers & anomalous) >= 0.5 * len(carriers)
                or any(len(carriers & s.by_feature[m]) >= 0.8 * len(carriers | s.by_feature[m]) for m in markers)
            )
            if not (len(left) >= cfg.min_support and tail <= cfg.alpha) and not alike:
                continue
            markers.add(feature)
            explained |= carriers & anomalous
            for eid in carriers:  # every record with the trigger: the attacker's clean-looking ones too
                triggers.setdefault(eid, f"{feature} ({signal})")
        verdicts = {}
        for eid, entry in s.entries.items():
            trusted = not cfg.trusted_writers or entry.writer in cfg.trusted_writers
            verdicts[eid] = self._verdict(entry, shared[eid], triggers.get(eid), trusted)
        excluded = {eid for eid, v in verdicts.items() if not v.admitted}
        s.cached = (s.version, verdicts, set(triggers), excluded, markers)
        return verdicts, set(triggers), excluded

    def _verdict(self, entry: _Entry, shared: str | None, trigger: str | None, trusted: bool) -> RecordVerdict:
        admission = self.settings.admission if trusted else self.settings.untrusted_admission
        writer = f"writer {entry.writer or '(anonymous)'}, {'trusted' if trusted else 'untrusted'}"
        check = f"reasoning {entry.check.verdict.value.replace('_', ' ')}: {entry.check.detail}"
        if trigger is not None:
            admitted, why = False, f"quarantined: its question carries the trigger {trigger}"
        elif admission is Admission.NEVER:
            admitted, why = False, "held: its writer is not trusted"
        elif admission is Admission.VERIFIED and entry.check.verdict is not Verdict.FOLLOWS:
            admitted, why = False, "held: its writer is untrusted and its answer is not shown to follow"
        elif admission in _STRICT and entry.check.verdict is Verdict.DOES_NOT_FOLLOW:
            admitted, why = False, "held: its reasoning does not follow"
        elif admission in _STRICT and shared is not None:
            admitted, why = False, f"held: its step {shared[:80]!r} recurs across unrelated questions"
        else:
            admitted, why = True, f"admitted: {admission.value}, no trigger"
        return RecordVerdict(entry.check, shared, trigger, entry.writer, trusted, admitted, f"{why}; {check}; {writer}")

    def quarantined(self, tenant: str) -> set[str]:
        """Ids of the tenant's records held as carrying a backdoor (anomalous, with a trigger)."""
        return self._judge(tenant)[1]

    def excluded(self, tenant: str) -> set[str]:
        """Ids of the tenant's records that orchestration must not hand out: the quarantined,
        and those the admission policy holds."""
        return self._judge(tenant)[2]

    def verdict(self, tenant: str, experience_id: str) -> RecordVerdict | None:
        return self._judge(tenant)[0].get(experience_id)

    def verdicts(self, tenant: str) -> dict[str, RecordVerdict]:
        return dict(self._judge(tenant)[0])

    def triggers(self, tenant: str) -> set[str]:
        """The question features judged to be triggers."""
        s = self._tenants.get(tenant)
        self._judge(tenant)
        return set(s.cached[4]) if s is not None and s.cached is not None else set()
