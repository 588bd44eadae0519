from rosemesh.explain.v1 import explain_pb2 as _explain_pb2
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

class AdaptMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADAPT_METHOD_UNSPECIFIED: _ClassVar[AdaptMethod]
    ADAPT_METHOD_LPT: _ClassVar[AdaptMethod]
    ADAPT_METHOD_LORA: _ClassVar[AdaptMethod]

class OperationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_STATE_UNSPECIFIED: _ClassVar[OperationState]
    OPERATION_STATE_QUEUED: _ClassVar[OperationState]
    OPERATION_STATE_RUNNING: _ClassVar[OperationState]
    OPERATION_STATE_SUCCEEDED: _ClassVar[OperationState]
    OPERATION_STATE_FAILED: _ClassVar[OperationState]
    OPERATION_STATE_CANCELLED: _ClassVar[OperationState]
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
ADAPT_METHOD_UNSPECIFIED: AdaptMethod
ADAPT_METHOD_LPT: AdaptMethod
ADAPT_METHOD_LORA: AdaptMethod
OPERATION_STATE_UNSPECIFIED: OperationState
OPERATION_STATE_QUEUED: OperationState
OPERATION_STATE_RUNNING: OperationState
OPERATION_STATE_SUCCEEDED: OperationState
OPERATION_STATE_FAILED: OperationState
OPERATION_STATE_CANCELLED: OperationState

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
    __slots__ = ("texts", "model", "policy", "task", "tenant")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    policy: ExitPolicy
    task: str
    tenant: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., policy: _Optional[_Union[ExitPolicy, _Mapping]] = ..., task: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

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

class LptOptions(_message.Message):
    __slots__ = ("insertion_layer", "prompt_length", "generator_size")
    INSERTION_LAYER_FIELD_NUMBER: _ClassVar[int]
    PROMPT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_SIZE_FIELD_NUMBER: _ClassVar[int]
    insertion_layer: int
    prompt_length: int
    generator_size: int
    def __init__(self, insertion_layer: _Optional[int] = ..., prompt_length: _Optional[int] = ..., generator_size: _Optional[int] = ...) -> None: ...

class LoraOptions(_message.Message):
    __slots__ = ("rank", "target_modules")
    RANK_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    rank: int
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rank: _Optional[int] = ..., target_modules: _Optional[_Iterable[str]] = ...) -> None: ...

class LabelledExample(_message.Message):
    __slots__ = ("text", "label")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    label: str
    def __init__(self, text: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class AdaptRequest(_message.Message):
    __slots__ = ("tenant", "task", "examples", "dataset", "method", "lpt", "lora", "epochs", "request_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LPT_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    task: str
    examples: _containers.RepeatedCompositeFieldContainer[LabelledExample]
    dataset: str
    method: AdaptMethod
    lpt: LptOptions
    lora: LoraOptions
    epochs: float
    request_id: str
    def __init__(self, tenant: _Optional[str] = ..., task: _Optional[str] = ..., examples: _Optional[_Iterable[_Union[LabelledExample, _Mapping]]] = ..., dataset: _Optional[str] = ..., method: _Optional[_Union[AdaptMethod, str]] = ..., lpt: _Optional[_Union[LptOptions, _Mapping]] = ..., lora: _Optional[_Union[LoraOptions, _Mapping]] = ..., epochs: _Optional[float] = ..., request_id: _Optional[str] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("id", "tenant", "task", "method", "state", "stage", "progress", "dev_accuracy", "adapter_version", "error", "attempts", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    DEV_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    task: str
    method: AdaptMethod
    state: OperationState
    stage: str
    progress: float
    dev_accuracy: float
    adapter_version: str
    error: str
    attempts: int
    created_at: float
    updated_at: float
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., task: _Optional[str] = ..., method: _Optional[_Union[AdaptMethod, str]] = ..., state: _Optional[_Union[OperationState, str]] = ..., stage: _Optional[str] = ..., progress: _Optional[float] = ..., dev_accuracy: _Optional[float] = ..., adapter_version: _Optional[str] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ...) -> None: ...

class AdaptResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class GetOperationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetOperationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class CancelOperationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelOperationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class ListAdaptersRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class AdapterInfo(_message.Message):
    __slots__ = ("tenant", "task", "version", "method", "labels", "dev_accuracy", "parameters", "insertion_layer", "prompt_length", "rank")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DEV_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INSERTION_LAYER_FIELD_NUMBER: _ClassVar[int]
    PROMPT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    task: str
    version: str
    method: AdaptMethod
    labels: _containers.RepeatedScalarFieldContainer[str]
    dev_accuracy: float
    parameters: int
    insertion_layer: int
    prompt_length: int
    rank: int
    def __init__(self, tenant: _Optional[str] = ..., task: _Optional[str] = ..., version: _Optional[str] = ..., method: _Optional[_Union[AdaptMethod, str]] = ..., labels: _Optional[_Iterable[str]] = ..., dev_accuracy: _Optional[float] = ..., parameters: _Optional[int] = ..., insertion_layer: _Optional[int] = ..., prompt_length: _Optional[int] = ..., rank: _Optional[int] = ...) -> None: ...

class ListAdaptersResponse(_message.Message):
    __slots__ = ("adapters",)
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    adapters: _containers.RepeatedCompositeFieldContainer[AdapterInfo]
    def __init__(self, adapters: _Optional[_Iterable[_Union[AdapterInfo, _Mapping]]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("texts", "model", "policy", "task", "tenant", "options")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    policy: ExitPolicy
    task: str
    tenant: str
    options: _explain_pb2.ExplainOptions
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., policy: _Optional[_Union[ExitPolicy, _Mapping]] = ..., task: _Optional[str] = ..., tenant: _Optional[str] = ..., options: _Optional[_Union[_explain_pb2.ExplainOptions, _Mapping]] = ...) -> None: ...

class LayerPrediction(_message.Message):
    __slots__ = ("layer", "label", "label_index", "confidence", "entropy", "streak")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_INDEX_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    STREAK_FIELD_NUMBER: _ClassVar[int]
    layer: int
    label: str
    label_index: int
    confidence: float
    entropy: float
    streak: int
    def __init__(self, layer: _Optional[int] = ..., label: _Optional[str] = ..., label_index: _Optional[int] = ..., confidence: _Optional[float] = ..., entropy: _Optional[float] = ..., streak: _Optional[int] = ...) -> None: ...

class ExitTrace(_message.Message):
    __slots__ = ("layers", "exit_layer", "rule")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    EXIT_LAYER_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerPrediction]
    exit_layer: int
    rule: str
    def __init__(self, layers: _Optional[_Iterable[_Union[LayerPrediction, _Mapping]]] = ..., exit_layer: _Optional[int] = ..., rule: _Optional[str] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("classification", "attributions", "exit_trace")
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    EXIT_TRACE_FIELD_NUMBER: _ClassVar[int]
    classification: Classification
    attributions: _containers.RepeatedCompositeFieldContainer[_explain_pb2.Attribution]
    exit_trace: ExitTrace
    def __init__(self, classification: _Optional[_Union[Classification, _Mapping]] = ..., attributions: _Optional[_Iterable[_Union[_explain_pb2.Attribution, _Mapping]]] = ..., exit_trace: _Optional[_Union[ExitTrace, _Mapping]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("model", "model_version", "backend", "policy", "labels", "explanations")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    backend: str
    policy: ExitPolicy
    labels: _containers.RepeatedScalarFieldContainer[str]
    explanations: _containers.RepeatedCompositeFieldContainer[Explanation]
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., backend: _Optional[str] = ..., policy: _Optional[_Union[ExitPolicy, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., explanations: _Optional[_Iterable[_Union[Explanation, _Mapping]]] = ...) -> None: ...
