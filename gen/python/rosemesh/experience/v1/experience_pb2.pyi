import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_ROSE: _ClassVar[Strategy]
    STRATEGY_SIMILARITY_TOPK: _ClassVar[Strategy]
    STRATEGY_MMR: _ClassVar[Strategy]
    STRATEGY_RANDOM: _ClassVar[Strategy]

class Bucketing(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUCKETING_UNSPECIFIED: _ClassVar[Bucketing]
    BUCKETING_EQUAL_WIDTH: _ClassVar[Bucketing]
    BUCKETING_EQUAL_COUNT: _ClassVar[Bucketing]

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_EXACT: _ClassVar[SearchMode]
    SEARCH_MODE_SUBLINEAR: _ClassVar[SearchMode]
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_ROSE: Strategy
STRATEGY_SIMILARITY_TOPK: Strategy
STRATEGY_MMR: Strategy
STRATEGY_RANDOM: Strategy
BUCKETING_UNSPECIFIED: Bucketing
BUCKETING_EQUAL_WIDTH: Bucketing
BUCKETING_EQUAL_COUNT: Bucketing
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_EXACT: SearchMode
SEARCH_MODE_SUBLINEAR: SearchMode

class ReasoningPath(_message.Message):
    __slots__ = ("reasoning", "answer")
    REASONING_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    reasoning: str
    answer: str
    def __init__(self, reasoning: _Optional[str] = ..., answer: _Optional[str] = ...) -> None: ...

class Experience(_message.Message):
    __slots__ = ("id", "tenant", "question", "reasoning", "answer", "uncertainty", "complexity", "path_count", "majority_count", "create_time", "update_time", "writer")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    COMPLEXITY_FIELD_NUMBER: _ClassVar[int]
    PATH_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAJORITY_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    question: str
    reasoning: str
    answer: str
    uncertainty: float
    complexity: float
    path_count: int
    majority_count: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    writer: str
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., question: _Optional[str] = ..., reasoning: _Optional[str] = ..., answer: _Optional[str] = ..., uncertainty: _Optional[float] = ..., complexity: _Optional[float] = ..., path_count: _Optional[int] = ..., majority_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., writer: _Optional[str] = ...) -> None: ...

class RecordRequest(_message.Message):
    __slots__ = ("tenant", "question", "paths")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    question: str
    paths: _containers.RepeatedCompositeFieldContainer[ReasoningPath]
    def __init__(self, tenant: _Optional[str] = ..., question: _Optional[str] = ..., paths: _Optional[_Iterable[_Union[ReasoningPath, _Mapping]]] = ...) -> None: ...

class RecordResponse(_message.Message):
    __slots__ = ("experience", "created", "consistency_token")
    EXPERIENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experience: Experience
    created: bool
    consistency_token: str
    def __init__(self, experience: _Optional[_Union[Experience, _Mapping]] = ..., created: _Optional[bool] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class RecordStreamRequest(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: RecordRequest
    def __init__(self, record: _Optional[_Union[RecordRequest, _Mapping]] = ...) -> None: ...

class RecordStreamResponse(_message.Message):
    __slots__ = ("created_count", "updated_count", "consistency_tokens")
    class ConsistencyTokensEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CREATED_COUNT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    created_count: int
    updated_count: int
    consistency_tokens: _containers.ScalarMap[str, str]
    def __init__(self, created_count: _Optional[int] = ..., updated_count: _Optional[int] = ..., consistency_tokens: _Optional[_Mapping[str, str]] = ...) -> None: ...

class OrchestrateRequest(_message.Message):
    __slots__ = ("tenant", "question", "k", "strategy", "uncertainty_ratio", "bucketing", "search_mode", "mmr_lambda", "seed", "consistency_token", "explain")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_RATIO_FIELD_NUMBER: _ClassVar[int]
    BUCKETING_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MODE_FIELD_NUMBER: _ClassVar[int]
    MMR_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    question: str
    k: int
    strategy: Strategy
    uncertainty_ratio: float
    bucketing: Bucketing
    search_mode: SearchMode
    mmr_lambda: float
    seed: int
    consistency_token: str
    explain: bool
    def __init__(self, tenant: _Optional[str] = ..., question: _Optional[str] = ..., k: _Optional[int] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., uncertainty_ratio: _Optional[float] = ..., bucketing: _Optional[_Union[Bucketing, str]] = ..., search_mode: _Optional[_Union[SearchMode, str]] = ..., mmr_lambda: _Optional[float] = ..., seed: _Optional[int] = ..., consistency_token: _Optional[str] = ..., explain: _Optional[bool] = ...) -> None: ...

class ChoiceReason(_message.Message):
    __slots__ = ("bucket_similarity_min", "bucket_similarity_max", "bucket_size", "bucket_min_uncertainty", "uncertainty_bound", "uncertainty", "kept", "complexity_rank")
    BUCKET_SIMILARITY_MIN_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SIMILARITY_MAX_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SIZE_FIELD_NUMBER: _ClassVar[int]
    BUCKET_MIN_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_BOUND_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    COMPLEXITY_RANK_FIELD_NUMBER: _ClassVar[int]
    bucket_similarity_min: float
    bucket_similarity_max: float
    bucket_size: int
    bucket_min_uncertainty: float
    uncertainty_bound: float
    uncertainty: float
    kept: int
    complexity_rank: int
    def __init__(self, bucket_similarity_min: _Optional[float] = ..., bucket_similarity_max: _Optional[float] = ..., bucket_size: _Optional[int] = ..., bucket_min_uncertainty: _Optional[float] = ..., uncertainty_bound: _Optional[float] = ..., uncertainty: _Optional[float] = ..., kept: _Optional[int] = ..., complexity_rank: _Optional[int] = ...) -> None: ...

class Demonstration(_message.Message):
    __slots__ = ("experience", "similarity", "bucket_index", "reason", "admission")
    EXPERIENCE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    BUCKET_INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_FIELD_NUMBER: _ClassVar[int]
    experience: Experience
    similarity: float
    bucket_index: int
    reason: ChoiceReason
    admission: Admission
    def __init__(self, experience: _Optional[_Union[Experience, _Mapping]] = ..., similarity: _Optional[float] = ..., bucket_index: _Optional[int] = ..., reason: _Optional[_Union[ChoiceReason, _Mapping]] = ..., admission: _Optional[_Union[Admission, _Mapping]] = ...) -> None: ...

class Admission(_message.Message):
    __slots__ = ("admitted", "reasoning_check", "reasoning_check_detail", "shared_step", "trigger", "writer", "writer_trusted", "why")
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    REASONING_CHECK_FIELD_NUMBER: _ClassVar[int]
    REASONING_CHECK_DETAIL_FIELD_NUMBER: _ClassVar[int]
    SHARED_STEP_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    WRITER_TRUSTED_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    admitted: bool
    reasoning_check: str
    reasoning_check_detail: str
    shared_step: str
    trigger: str
    writer: str
    writer_trusted: bool
    why: str
    def __init__(self, admitted: _Optional[bool] = ..., reasoning_check: _Optional[str] = ..., reasoning_check_detail: _Optional[str] = ..., shared_step: _Optional[str] = ..., trigger: _Optional[str] = ..., writer: _Optional[str] = ..., writer_trusted: _Optional[bool] = ..., why: _Optional[str] = ...) -> None: ...

class ListHeldRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class HeldExperience(_message.Message):
    __slots__ = ("experience", "admission")
    EXPERIENCE_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_FIELD_NUMBER: _ClassVar[int]
    experience: Experience
    admission: Admission
    def __init__(self, experience: _Optional[_Union[Experience, _Mapping]] = ..., admission: _Optional[_Union[Admission, _Mapping]] = ...) -> None: ...

class ListHeldResponse(_message.Message):
    __slots__ = ("held",)
    HELD_FIELD_NUMBER: _ClassVar[int]
    held: _containers.RepeatedCompositeFieldContainer[HeldExperience]
    def __init__(self, held: _Optional[_Iterable[_Union[HeldExperience, _Mapping]]] = ...) -> None: ...

class OrchestrateResponse(_message.Message):
    __slots__ = ("demonstrations", "strategy", "bucketing", "search_mode", "uncertainty_ratio", "pool_size", "embedding_model", "view_age_ms", "load_wait_ms")
    DEMONSTRATIONS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BUCKETING_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MODE_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_RATIO_FIELD_NUMBER: _ClassVar[int]
    POOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    VIEW_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    LOAD_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    demonstrations: _containers.RepeatedCompositeFieldContainer[Demonstration]
    strategy: Strategy
    bucketing: Bucketing
    search_mode: SearchMode
    uncertainty_ratio: float
    pool_size: int
    embedding_model: str
    view_age_ms: float
    load_wait_ms: float
    def __init__(self, demonstrations: _Optional[_Iterable[_Union[Demonstration, _Mapping]]] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., bucketing: _Optional[_Union[Bucketing, str]] = ..., search_mode: _Optional[_Union[SearchMode, str]] = ..., uncertainty_ratio: _Optional[float] = ..., pool_size: _Optional[int] = ..., embedding_model: _Optional[str] = ..., view_age_ms: _Optional[float] = ..., load_wait_ms: _Optional[float] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("tenant", "id", "question")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    id: str
    question: str
    def __init__(self, tenant: _Optional[str] = ..., id: _Optional[str] = ..., question: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("experience",)
    EXPERIENCE_FIELD_NUMBER: _ClassVar[int]
    experience: Experience
    def __init__(self, experience: _Optional[_Union[Experience, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("tenant", "id", "question")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    id: str
    question: str
    def __init__(self, tenant: _Optional[str] = ..., id: _Optional[str] = ..., question: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "consistency_token")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    consistency_token: str
    def __init__(self, deleted: _Optional[bool] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("tenant", "page_size", "page_token")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    page_size: int
    page_token: str
    def __init__(self, tenant: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("experiences", "next_page_token")
    EXPERIENCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiences: _containers.RepeatedCompositeFieldContainer[Experience]
    next_page_token: str
    def __init__(self, experiences: _Optional[_Iterable[_Union[Experience, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("experience_count", "indexed_count", "mean_uncertainty", "mean_complexity", "embedding_model", "dimension", "storage_backend", "last_write_time")
    EXPERIENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEXED_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    MEAN_COMPLEXITY_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    STORAGE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    LAST_WRITE_TIME_FIELD_NUMBER: _ClassVar[int]
    experience_count: int
    indexed_count: int
    mean_uncertainty: float
    mean_complexity: float
    embedding_model: str
    dimension: int
    storage_backend: str
    last_write_time: _timestamp_pb2.Timestamp
    def __init__(self, experience_count: _Optional[int] = ..., indexed_count: _Optional[int] = ..., mean_uncertainty: _Optional[float] = ..., mean_complexity: _Optional[float] = ..., embedding_model: _Optional[str] = ..., dimension: _Optional[int] = ..., storage_backend: _Optional[str] = ..., last_write_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
