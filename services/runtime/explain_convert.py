"""The shared rosemesh.explain.v1 messages to and from the core's attributions."""

from __future__ import annotations

from rosemesh.explain.v1 import explain_pb2

from services.common.explain import Method, Words, WordScores

METHOD_CODES = {
    Method.OCCLUSION: explain_pb2.ATTRIBUTION_METHOD_OCCLUSION,
    Method.INTEGRATED_GRADIENTS: explain_pb2.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS,
    Method.ATTENTION: explain_pb2.ATTRIBUTION_METHOD_ATTENTION,
}
_METHODS = {code: method for method, code in METHOD_CODES.items()}


def options_from_proto(options: explain_pb2.ExplainOptions) -> tuple[list[Method], int, int | None]:
    """(methods, steps, target index); an unknown or unspecified method is an InvalidInput."""
    from services.common.errors import InvalidInput

    unknown = [code for code in options.methods if code not in _METHODS]
    if unknown:
        raise InvalidInput.single(
            "options.methods", f"unknown attribution methods {unknown}; expected OCCLUSION, INTEGRATED_GRADIENTS or ATTENTION"
        )
    target = options.target_index if options.HasField("target_index") else None
    return [_METHODS[code] for code in options.methods], options.steps, target


def attribution_to_proto(words: Words, scores: WordScores, labels: list[str]) -> explain_pb2.Attribution:
    attribution = explain_pb2.Attribution(
        method=METHOD_CODES[scores.method],
        target=labels[scores.target_index],
        target_index=scores.target_index,
        words=[
            explain_pb2.WordAttribution(word=words.word(i), start=start, end=end, score=float(score))
            for i, ((start, end), score) in enumerate(zip(words.spans, scores.scores, strict=True))
        ],
        seconds=scores.seconds,
    )
    if scores.convergence_delta is not None:
        attribution.convergence_delta = scores.convergence_delta
    return attribution
