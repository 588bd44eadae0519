"""The judge's messages, built from a rubric. The wording is one template for every rubric;
what differs between rubrics (guidance, dimensions, scales) is the rubric's data."""

from __future__ import annotations

from services.critique.core.rubrics import CRITIQUE_MAX_CHARS, OVERALL_RANGE, Dimension, Rubric

ChatMessage = dict[str, str]

SYSTEM = (
    "You are a careful, impartial judge of AI assistant responses. You always answer with one JSON "
    "object and nothing else."
)


def _scale(dimension: Dimension) -> str:
    if dimension.labels:
        return "one of " + ", ".join(str(label) for label in dimension.labels)
    return f"an integer from {int(dimension.min_score)} to {int(dimension.max_score)}"


def _reference_block(reference: str) -> str:
    return f"[Reference answer]\n{reference}\n\n" if reference else ""


def score_messages(rubric: Rubric, query: str, response: str, reference: str = "") -> list[ChatMessage]:
    low, high = OVERALL_RANGE
    criteria = "\n".join(f'- "{d.name}" ({_scale(d)}): {d.description}' for d in rubric.judged)
    # Placeholders, not numbers: a small model copies an example's numbers into its answer.
    keys = ", ".join(
        ['"critique": "<your critique>"', *(f'"{d.name}": <{_scale(d)}>' for d in rubric.judged)]
    )
    keys += f', "overall": <an integer from {low} to {high}>'
    user = (
        f"{rubric.guidance}\n\n"
        f"[User query]\n{query}\n\n{_reference_block(reference)}[Response]\n{response}\n\n"
        f"Write a short critique (at most {CRITIQUE_MAX_CHARS} characters), then score:\n"
        f"{criteria}\n"
        f'- "overall" (an integer from {low} to {high}): the response\'s overall quality under this rubric.\n\n'
        f"Answer with a JSON object with exactly these keys: {{{keys}}}"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def compare_messages(
    rubric: Rubric, query: str, response_a: str, response_b: str, reference: str = ""
) -> list[ChatMessage]:
    criteria = "; ".join(f"{d.name}: {d.description}" for d in rubric.judged) or rubric.description
    user = (
        f"{rubric.guidance}\n\nCompare two responses to the same query. Criteria: {criteria}\n\n"
        f"[User query]\n{query}\n\n{_reference_block(reference)}"
        f"[Response A]\n{response_a}\n\n[Response B]\n{response_b}\n\n"
        f"Write a short critique (at most {CRITIQUE_MAX_CHARS} characters) and name the better response. "
        'Answer with a JSON object: {"critique": "...", "winner": "A" or "B" or "tie"}'
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def repair_messages(messages: list[ChatMessage], raw: str, error: str) -> list[ChatMessage]:
    """The conversation so far, the unreadable answer, and a request to answer again correctly."""
    return [
        *messages,
        {"role": "assistant", "content": raw},
        {
            "role": "user",
            "content": f"That answer could not be read: {error}. Reply again with only the JSON object, "
            "complete, with every key.",
        },
    ]
