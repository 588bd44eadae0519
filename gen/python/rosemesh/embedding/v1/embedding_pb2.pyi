from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VectorEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VECTOR_ENCODING_UNSPECIFIED: _ClassVar[VectorEncoding]
    VECTOR_ENCODING_PACKED_F32: _ClassVar[VectorEncoding]
VECTOR_ENCODING_UNSPECIFIED: VectorEncoding
VECTOR_ENCODING_PACKED_F32: VectorEncoding

class EmbedRequest(_message.Message):
    __slots__ = ("texts", "model", "encoding")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    encoding: VectorEncoding
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., encoding: _Optional[_Union[VectorEncoding, str]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values", "truncated", "token_count")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    truncated: bool
    token_count: int
    def __init__(self, values: _Optional[_Iterable[float]] = ..., truncated: _Optional[bool] = ..., token_count: _Optional[int] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("model", "dimension", "embeddings", "packed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    model: str
    dimension: int
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    packed: bytes
    def __init__(self, model: _Optional[str] = ..., dimension: _Optional[int] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., packed: _Optional[bytes] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "dimension", "max_tokens", "backend", "precision", "is_default", "tier", "parity", "parity_reference", "cpu_path", "max_texts_per_request", "max_text_bytes", "max_batch_size", "max_batch_tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PARITY_FIELD_NUMBER: _ClassVar[int]
    PARITY_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CPU_PATH_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimension: int
    max_tokens: int
    backend: str
    precision: str
    is_default: bool
    tier: str
    parity: float
    parity_reference: str
    cpu_path: str
    max_texts_per_request: int
    max_text_bytes: int
    max_batch_size: int
    max_batch_tokens: int
    def __init__(self, name: _Optional[str] = ..., dimension: _Optional[int] = ..., max_tokens: _Optional[int] = ..., backend: _Optional[str] = ..., precision: _Optional[str] = ..., is_default: _Optional[bool] = ..., tier: _Optional[str] = ..., parity: _Optional[float] = ..., parity_reference: _Optional[str] = ..., cpu_path: _Optional[str] = ..., max_texts_per_request: _Optional[int] = ..., max_text_bytes: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_batch_tokens: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "cpu_features", "plain_cpu_paths")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CPU_FEATURES_FIELD_NUMBER: _ClassVar[int]
    PLAIN_CPU_PATHS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    cpu_features: _containers.RepeatedScalarFieldContainer[str]
    plain_cpu_paths: bool
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., cpu_features: _Optional[_Iterable[str]] = ..., plain_cpu_paths: _Optional[bool] = ...) -> None: ...
