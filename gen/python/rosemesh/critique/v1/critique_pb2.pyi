from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Scorer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORER_UNSPECIFIED: _ClassVar[Scorer]
    SCORER_LLM_JUDGE: _ClassVar[Scorer]
    SCORER_REWARD_MODEL: _ClassVar[Scorer]

class Position(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POSITION_UNSPECIFIED: _ClassVar[Position]
    POSITION_CONSISTENT: _ClassVar[Position]
    POSITION_INCONSISTENT: _ClassVar[Position]
    POSITION_NOT_SWAPPED: _ClassVar[Position]

class ParseStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARSE_STATUS_UNSPECIFIED: _ClassVar[ParseStatus]
    PARSE_STATUS_OK: _ClassVar[ParseStatus]
    PARSE_STATUS_REPAIRED: _ClassVar[ParseStatus]
    PARSE_STATUS_FAILED: _ClassVar[ParseStatus]

class ScoreSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORE_SOURCE_UNSPECIFIED: _ClassVar[ScoreSource]
    SCORE_SOURCE_JUDGE: _ClassVar[ScoreSource]
    SCORE_SOURCE_EMBEDDING: _ClassVar[ScoreSource]

class Winner(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WINNER_UNSPECIFIED: _ClassVar[Winner]
    WINNER_A: _ClassVar[Winner]
    WINNER_B: _ClassVar[Winner]
    WINNER_TIE: _ClassVar[Winner]

class PairOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAIR_OUTCOME_UNSPECIFIED: _ClassVar[PairOutcome]
    PAIR_OUTCOME_CONFIDENT: _ClassVar[PairOutcome]
    PAIR_OUTCOME_MARGIN_TOO_SMALL: _ClassVar[PairOutcome]
    PAIR_OUTCOME_TOO_FEW_SCORED: _ClassVar[PairOutcome]
SCORER_UNSPECIFIED: Scorer
SCORER_LLM_JUDGE: Scorer
SCORER_REWARD_MODEL: Scorer
POSITION_UNSPECIFIED: Position
POSITION_CONSISTENT: Position
POSITION_INCONSISTENT: Position
POSITION_NOT_SWAPPED: Position
PARSE_STATUS_UNSPECIFIED: ParseStatus
PARSE_STATUS_OK: ParseStatus
PARSE_STATUS_REPAIRED: ParseStatus
PARSE_STATUS_FAILED: ParseStatus
SCORE_SOURCE_UNSPECIFIED: ScoreSource
SCORE_SOURCE_JUDGE: ScoreSource
SCORE_SOURCE_EMBEDDING: ScoreSource
WINNER_UNSPECIFIED: Winner
WINNER_A: Winner
WINNER_B: Winner
WINNER_TIE: Winner
PAIR_OUTCOME_UNSPECIFIED: PairOutcome
PAIR_OUTCOME_CONFIDENT: PairOutcome
PAIR_OUTCOME_MARGIN_TOO_SMALL: PairOutcome
PAIR_OUTCOME_TOO_FEW_SCORED: PairOutcome

class DimensionScore(_message.Message):
    __slots__ = ("dimension", "score", "source", "explanation")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    dimension: str
    score: float
    source: ScoreSource
    explanation: str
    def __init__(self, dimension: _Optional[str] = ..., score: _Optional[float] = ..., source: _Optional[_Union[ScoreSource, str]] = ..., explanation: _Optional[str] = ...) -> None: ...

class ScoreResult(_message.Message):
    __slots__ = ("parse_status", "overall", "dimensions", "critique", "raw_output", "attempts", "reward")
    PARSE_STATUS_FIELD_NUMBER: _ClassVar[int]
    OVERALL_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    CRITIQUE_FIELD_NUMBER: _ClassVar[int]
    RAW_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    parse_status: ParseStatus
    overall: float
    dimensions: _containers.RepeatedCompositeFieldContainer[DimensionScore]
    critique: str
    raw_output: str
    attempts: int
    reward: float
    def __init__(self, parse_status: _Optional[_Union[ParseStatus, str]] = ..., overall: _Optional[float] = ..., dimensions: _Optional[_Iterable[_Union[DimensionScore, _Mapping]]] = ..., critique: _Optional[str] = ..., raw_output: _Optional[str] = ..., attempts: _Optional[int] = ..., reward: _Optional[float] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("rubric", "query", "response", "reference", "common_answers", "scorer")
    RUBRIC_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    COMMON_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    rubric: str
    query: str
    response: str
    reference: str
    common_answers: _containers.RepeatedScalarFieldContainer[str]
    scorer: Scorer
    def __init__(self, rubric: _Optional[str] = ..., query: _Optional[str] = ..., response: _Optional[str] = ..., reference: _Optional[str] = ..., common_answers: _Optional[_Iterable[str]] = ..., scorer: _Optional[_Union[Scorer, str]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("rubric", "judge_model", "result")
    RUBRIC_FIELD_NUMBER: _ClassVar[int]
    JUDGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    rubric: str
    judge_model: str
    result: ScoreResult
    def __init__(self, rubric: _Optional[str] = ..., judge_model: _Optional[str] = ..., result: _Optional[_Union[ScoreResult, _Mapping]] = ...) -> None: ...

class ScoreItem(_message.Message):
    __slots__ = ("query", "response", "reference", "common_answers")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    COMMON_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    query: str
    response: str
    reference: str
    common_answers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, query: _Optional[str] = ..., response: _Optional[str] = ..., reference: _Optional[str] = ..., common_answers: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchScoreRequest(_message.Message):
    __slots__ = ("rubric", "items", "scorer")
    RUBRIC_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    rubric: str
    items: _containers.RepeatedCompositeFieldContainer[ScoreItem]
    scorer: Scorer
    def __init__(self, rubric: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ScoreItem, _Mapping]]] = ..., scorer: _Optional[_Union[Scorer, str]] = ...) -> None: ...

class DimensionAggregate(_message.Message):
    __slots__ = ("dimension", "scored_count", "mean_score", "harmless_rate", "harmless_score")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    SCORED_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_SCORE_FIELD_NUMBER: _ClassVar[int]
    HARMLESS_RATE_FIELD_NUMBER: _ClassVar[int]
    HARMLESS_SCORE_FIELD_NUMBER: _ClassVar[int]
    dimension: str
    scored_count: int
    mean_score: float
    harmless_rate: float
    harmless_score: float
    def __init__(self, dimension: _Optional[str] = ..., scored_count: _Optional[int] = ..., mean_score: _Optional[float] = ..., harmless_rate: _Optional[float] = ..., harmless_score: _Optional[float] = ...) -> None: ...

class BatchScoreResponse(_message.Message):
    __slots__ = ("rubric", "judge_model", "results", "parse_failure_count", "mean_overall", "dimensions", "harmless_rate", "harmless_score")
    RUBRIC_FIELD_NUMBER: _ClassVar[int]
    JUDGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PARSE_FAILURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_OVERALL_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    HARMLESS_RATE_FIELD_NUMBER: _ClassVar[int]
    HARMLESS_SCORE_FIELD_NUMBER: _ClassVar[int]
    rubric: str
    judge_model: str
    results: _containers.RepeatedCompositeFieldContainer[ScoreResult]
    parse_failure_count: int
    mean_overall: float
    dimensions: _containers.RepeatedCompositeFieldContainer[DimensionAggregate]
    harmless_rate: float
    harmless_score: float
    def __init__(self, rubric: _Optional[str] = ..., judge_model: _Optional[str] = ..., results: _Optional[_Iterable[_Union[ScoreResult, _Mapping]]] = ..., parse_failure_count: _Optional[int] = ..., mean_overall: _Optional[float] = ..., dimensions: _Optional[_Iterable[_Union[DimensionAggregate, _Mapping]]] = ..., harmless_rate: _Optional[float] = ..., harmless_score: _Optional[float] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("rubric", "query", "response_a", "response_b", "reference", "single_order", "scorer")
    RUBRIC_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_A_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_B_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    SINGLE_ORDER_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    rubric: str
    query: str
    response_a: str
    response_b: str
    reference: str
    single_order: bool
    scorer: Scorer
    def __init__(self, rubric: _Optional[str] = ..., query: _Optional[str] = ..., response_a: _Optional[str] = ..., response_b: _Optional[str] = ..., reference: _Optional[str] = ..., single_order: _Optional[bool] = ..., scorer: _Optional[_Union[Scorer, str]] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("rubric", "judge_model", "winner", "critique", "parse_status", "raw_output", "attempts", "position", "winner_as_given", "winner_swapped", "reward_a", "reward_b", "preference_a")
    RUBRIC_FIELD_NUMBER: _ClassVar[int]
    JUDGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    WINNER_FIELD_NUMBER: _ClassVar[int]
    CRITIQUE_FIELD_NUMBER: _ClassVar[int]
    PARSE_STATUS_FIELD_NUMBER: _ClassVar[int]
    RAW_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    WINNER_AS_GIVEN_FIELD_NUMBER: _ClassVar[int]
    WINNER_SWAPPED_FIELD_NUMBER: _ClassVar[int]
    REWARD_A_FIELD_NUMBER: _ClassVar[int]
    REWARD_B_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_A_FIELD_NUMBER: _ClassVar[int]
    rubric: str
    judge_model: str
    winner: Winner
    critique: str
    parse_status: ParseStatus
    raw_output: str
    attempts: int
    position: Position
    winner_as_given: Winner
    winner_swapped: Winner
    reward_a: float
    reward_b: float
    preference_a: float
    def __init__(self, rubric: _Optional[str] = ..., judge_model: _Optional[str] = ..., winner: _Optional[_Union[Winner, str]] = ..., critique: _Optional[str] = ..., parse_status: _Optional[_Union[ParseStatus, str]] = ..., raw_output: _Optional[str] = ..., attempts: _Optional[int] = ..., position: _Optional[_Union[Position, str]] = ..., winner_as_given: _Optional[_Union[Winner, str]] = ..., winner_swapped: _Optional[_Union[Winner, str]] = ..., reward_a: _Optional[float] = ..., reward_b: _Optional[float] = ..., preference_a: _Optional[float] = ...) -> None: ...

class PreferencePair(_message.Message):
    __slots__ = ("chosen_index", "rejected_index", "margin")
    CHOSEN_INDEX_FIELD_NUMBER: _ClassVar[int]
    REJECTED_INDEX_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    chosen_index: int
    rejected_index: int
    margin: float
    def __init__(self, chosen_index: _Optional[int] = ..., rejected_index: _Optional[int] = ..., margin: _Optional[float] = ...) -> None: ...

class BestOfNRequest(_message.Message):
    __slots__ = ("rubric", "query", "candidates", "reference", "min_margin", "common_answers", "scorer")
    RUBRIC_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    MIN_MARGIN_FIELD_NUMBER: _ClassVar[int]
    COMMON_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    rubric: str
    query: str
    candidates: _containers.RepeatedScalarFieldContainer[str]
    reference: str
    min_margin: float
    common_answers: _containers.RepeatedScalarFieldContainer[str]
    scorer: Scorer
    def __init__(self, rubric: _Optional[str] = ..., query: _Optional[str] = ..., candidates: _Optional[_Iterable[str]] = ..., reference: _Optional[str] = ..., min_margin: _Optional[float] = ..., common_answers: _Optional[_Iterable[str]] = ..., scorer: _Optional[_Union[Scorer, str]] = ...) -> None: ...

class BestOfNResponse(_message.Message):
    __slots__ = ("rubric", "judge_model", "scores", "outcome", "pair")
    RUBRIC_FIELD_NUMBER: _ClassVar[int]
    JUDGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    rubric: str
    judge_model: str
    scores: _containers.RepeatedCompositeFieldContainer[ScoreResult]
    outcome: PairOutcome
    pair: PreferencePair
    def __init__(self, rubric: _Optional[str] = ..., judge_model: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[ScoreResult, _Mapping]]] = ..., outcome: _Optional[_Union[PairOutcome, str]] = ..., pair: _Optional[_Union[PreferencePair, _Mapping]] = ...) -> None: ...

class PreferenceItem(_message.Message):
    __slots__ = ("id", "query", "candidates", "reference", "common_answers")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    COMMON_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    id: str
    query: str
    candidates: _containers.RepeatedScalarFieldContainer[str]
    reference: str
    common_answers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., query: _Optional[str] = ..., candidates: _Optional[_Iterable[str]] = ..., reference: _Optional[str] = ..., common_answers: _Optional[_Iterable[str]] = ...) -> None: ...

class ExportPreferencesRequest(_message.Message):
    __slots__ = ("rubric", "items", "min_margin", "scorer")
    RUBRIC_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MIN_MARGIN_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    rubric: str
    items: _containers.RepeatedCompositeFieldContainer[PreferenceItem]
    min_margin: float
    scorer: Scorer
    def __init__(self, rubric: _Optional[str] = ..., items: _Optional[_Iterable[_Union[PreferenceItem, _Mapping]]] = ..., min_margin: _Optional[float] = ..., scorer: _Optional[_Union[Scorer, str]] = ...) -> None: ...

class ExportPreferencesResponse(_message.Message):
    __slots__ = ("item_index", "id", "outcome", "pair", "jsonl")
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    JSONL_FIELD_NUMBER: _ClassVar[int]
    item_index: int
    id: str
    outcome: PairOutcome
    pair: PreferencePair
    jsonl: str
    def __init__(self, item_index: _Optional[int] = ..., id: _Optional[str] = ..., outcome: _Optional[_Union[PairOutcome, str]] = ..., pair: _Optional[_Union[PreferencePair, _Mapping]] = ..., jsonl: _Optional[str] = ...) -> None: ...

class ListRubricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Dimension(_message.Message):
    __slots__ = ("name", "description", "source", "min_score", "max_score", "labels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    MAX_SCORE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    source: ScoreSource
    min_score: float
    max_score: float
    labels: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., source: _Optional[_Union[ScoreSource, str]] = ..., min_score: _Optional[float] = ..., max_score: _Optional[float] = ..., labels: _Optional[_Iterable[int]] = ...) -> None: ...

class Rubric(_message.Message):
    __slots__ = ("name", "description", "dimensions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    dimensions: _containers.RepeatedCompositeFieldContainer[Dimension]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., dimensions: _Optional[_Iterable[_Union[Dimension, _Mapping]]] = ...) -> None: ...

class ListRubricsResponse(_message.Message):
    __slots__ = ("rubrics",)
    RUBRICS_FIELD_NUMBER: _ClassVar[int]
    rubrics: _containers.RepeatedCompositeFieldContainer[Rubric]
    def __init__(self, rubrics: _Optional[_Iterable[_Union[Rubric, _Mapping]]] = ...) -> None: ...
