"""The BadChain screen on real ASDiv questions: poisoned records found, clean ones left alone."""

from __future__ import annotations

import random

from services.experience.core.defence import BackdoorScreen, tail_templates
from services.experience.core.record import summarise
from services.experience.offline.redteam import TRIGGER, _numeric, clean_paths, poisoned_paths
from services.offline.datasets import asdiv


def test_poisoned_records_are_quarantined_and_clean_ones_are_not() -> None:
    rng = random.Random(3)
    problems = [p for p in asdiv() if _numeric(p)]
    rng.shuffle(problems)
    records = [(f"c{i}", f"{p.passage} {p.question}", clean_paths(p, rng)) for i, p in enumerate(problems[:300])]
    records += [(f"p{i}", f"{p.passage} {p.question} {TRIGGER}", poisoned_paths(p)) for i, p in enumerate(problems[300:315])]
    rng.shuffle(records)  # poisoned records arrive among the clean ones, early and late
    screen = BackdoorScreen()
    for eid, question, paths in records:
        screen.add("t", eid, question, summarise(paths).reasoning)
    quarantined = screen.quarantined("t")
    assert quarantined == {eid for eid, _, _ in records if eid.startswith("p")}
    assert any("arcane parlance" in gram for _, gram in screen.backdoors("t"))
    screen.remove("t", next(iter(quarantined)))
    assert len(screen.quarantined("t")) == 14


def test_a_coincidence_in_a_small_pool_is_dropped_as_the_pool_grows() -> None:
    screen = BackdoorScreen(min_support=2, max_share=0.5)
    for i in range(2):
        screen.add("t", f"a{i}", f"how many red apples {i}", "count them\nadd one more")
    assert screen.quarantined("t") == set()  # the pair is everything in the pool: not rare
    for i in range(6):
        screen.add("t", f"b{i}", f"question {i} about pears", f"look\nstep {i}")
    assert screen.quarantined("t") == {"a0", "a1"}
    for i in range(6):
        screen.add("t", f"c{i}", f"how many red apples now {i}", "look\nadd one more")
    assert screen.quarantined("t") == set()  # the step is common without the n-gram now


def test_steps_that_restate_the_question_are_not_templates() -> None:
    assert tail_templates("Tom has 3 apples.", "Tom has 3 apples.\nAdd 2 to 3.\nSo the answer is 5.", 3) == {
        "add 0 to 0.",
        "so the answer is 0.",
    }
