from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExitMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXIT_MODE_UNSPECIFIED: _ClassVar[ExitMode]
    EXIT_MODE_STATIC: _ClassVar[ExitMode]
    EXIT_MODE_DYNAMIC: _ClassVar[ExitMode]
    EXIT_MODE_PATIENCE: _ClassVar[ExitMode]
    EXIT_MODE_HASHEE: _ClassVar[ExitMode]

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_MULTI_EXIT: _ClassVar[ModelKind]
    MODEL_KIND_HASHEE: _ClassVar[ModelKind]
    MODEL_KIND_PLAIN: _ClassVar[ModelKind]

class TokenHash(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_HASH_UNSPECIFIED: _ClassVar[TokenHash]
    TOKEN_HASH_FREQUENCY: _ClassVar[TokenHash]
    TOKEN_HASH_RANDOM: _ClassVar[TokenHash]
EXIT_MODE_UNSPECIFIED: ExitMode
EXIT_MODE_STATIC: ExitMode
EXIT_MODE_DYNAMIC: ExitMode
EXIT_MODE_PATIENCE: ExitMode
EXIT_MODE_HASHEE: ExitMode
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_MULTI_EXIT: ModelKind
MODEL_KIND_HASHEE: ModelKind
MODEL_KIND_PLAIN: ModelKind
TOKEN_HASH_UNSPECIFIED: TokenHash
TOKEN_HASH_FREQUENCY: TokenHash
TOKEN_HASH_RANDOM: TokenHash

class ExitPolicy(_message.Message):
    __slots__ = ("mode", "static_layer", "entropy_threshold", "patience")
    MODE_FIELD_NUMBER: _ClassVar[int]
    STATIC_LAYER_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    mode: ExitMode
    static_layer: int
    entropy_threshold: float
    patience: int
    def __init__(self, mode: _Optional[_Union[ExitMode, str]] = ..., static_layer: _Optional[int] = ..., entropy_threshold: _Optional[float] = ..., patience: _Optional[int] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("texts", "model", "policy")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    policy: ExitPolicy
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., policy: _Optional[_Union[ExitPolicy, _Mapping]] = ...) -> None: ...

class TokenExit(_message.Message):
    __slots__ = ("token", "exit_layer")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXIT_LAYER_FIELD_NUMBER: _ClassVar[int]
    token: str
    exit_layer: int
    def __init__(self, token: _Optional[str] = ..., exit_layer: _Optional[int] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("label", "label_index", "probabilities", "exit_layer", "entropy", "flops", "token_exits", "token_count", "truncated")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_INDEX_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    EXIT_LAYER_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EXITS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    label: str
    label_index: int
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    exit_layer: int
    entropy: float
    flops: int
    token_exits: _containers.RepeatedCompositeFieldContainer[TokenExit]
    token_count: int
    truncated: bool
    def __init__(self, label: _Optional[str] = ..., label_index: _Optional[int] = ..., probabilities: _Optional[_Iterable[float]] = ..., exit_layer: _Optional[int] = ..., entropy: _Optional[float] = ..., flops: _Optional[int] = ..., token_exits: _Optional[_Iterable[_Union[TokenExit, _Mapping]]] = ..., token_count: _Optional[int] = ..., truncated: _Optional[bool] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("model", "model_version", "backend", "policy", "labels", "results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    backend: str
    policy: ExitPolicy
    labels: _containers.RepeatedScalarFieldContainer[str]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., backend: _Optional[str] = ..., policy: _Optional[_Union[ExitPolicy, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OperatingPoint(_message.Message):
    __slots__ = ("policy", "accuracy", "mean_layers", "mean_flops", "throughput")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MEAN_LAYERS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FLOPS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    policy: ExitPolicy
    accuracy: float
    mean_layers: float
    mean_flops: float
    throughput: float
    def __init__(self, policy: _Optional[_Union[ExitPolicy, _Mapping]] = ..., accuracy: _Optional[float] = ..., mean_layers: _Optional[float] = ..., mean_flops: _Optional[float] = ..., throughput: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "kind", "base_model", "dataset", "labels", "num_layers", "max_tokens", "supported_modes", "default_policy", "token_hash", "operating_points", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_MODES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_HASH_FIELD_NUMBER: _ClassVar[int]
    OPERATING_POINTS_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    kind: ModelKind
    base_model: str
    dataset: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    num_layers: int
    max_tokens: int
    supported_modes: _containers.RepeatedScalarFieldContainer[ExitMode]
    default_policy: ExitPolicy
    token_hash: TokenHash
    operating_points: _containers.RepeatedCompositeFieldContainer[OperatingPoint]
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., base_model: _Optional[str] = ..., dataset: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., num_layers: _Optional[int] = ..., max_tokens: _Optional[int] = ..., supported_modes: _Optional[_Iterable[_Union[ExitMode, str]]] = ..., default_policy: _Optional[_Union[ExitPolicy, _Mapping]] = ..., token_hash: _Optional[_Union[TokenHash, str]] = ..., operating_points: _Optional[_Iterable[_Union[OperatingPoint, _Mapping]]] = ..., is_default: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...
