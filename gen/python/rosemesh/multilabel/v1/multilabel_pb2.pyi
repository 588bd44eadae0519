from rosemesh.explain.v1 import explain_pb2 as _explain_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Policy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_UNSPECIFIED: _ClassVar[Policy]
    POLICY_FIXED: _ClassVar[Policy]
    POLICY_TUNED: _ClassVar[Policy]
    POLICY_META: _ClassVar[Policy]
POLICY_UNSPECIFIED: Policy
POLICY_FIXED: Policy
POLICY_TUNED: Policy
POLICY_META: Policy

class PredictRequest(_message.Message):
    __slots__ = ("texts", "model", "version", "policy")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    version: str
    policy: Policy
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., policy: _Optional[_Union[Policy, str]] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "probability", "threshold", "predicted")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    label: str
    probability: float
    threshold: float
    predicted: bool
    def __init__(self, label: _Optional[str] = ..., probability: _Optional[float] = ..., threshold: _Optional[float] = ..., predicted: _Optional[bool] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("labels", "scores")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "version", "policy", "predictions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    policy: Policy
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., policy: _Optional[_Union[Policy, str]] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Metrics(_message.Message):
    __slots__ = ("micro_f1", "macro_f1", "micro_precision", "micro_recall", "example_count")
    MICRO_F1_FIELD_NUMBER: _ClassVar[int]
    MACRO_F1_FIELD_NUMBER: _ClassVar[int]
    MICRO_PRECISION_FIELD_NUMBER: _ClassVar[int]
    MICRO_RECALL_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    micro_f1: float
    macro_f1: float
    micro_precision: float
    micro_recall: float
    example_count: int
    def __init__(self, micro_f1: _Optional[float] = ..., macro_f1: _Optional[float] = ..., micro_precision: _Optional[float] = ..., micro_recall: _Optional[float] = ..., example_count: _Optional[int] = ...) -> None: ...

class PolicyInfo(_message.Message):
    __slots__ = ("policy", "thresholds", "loss_weights", "test_metrics")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    LOSS_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    TEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    thresholds: _containers.RepeatedScalarFieldContainer[float]
    loss_weights: _containers.RepeatedScalarFieldContainer[float]
    test_metrics: Metrics
    def __init__(self, policy: _Optional[_Union[Policy, str]] = ..., thresholds: _Optional[_Iterable[float]] = ..., loss_weights: _Optional[_Iterable[float]] = ..., test_metrics: _Optional[_Union[Metrics, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "labels", "dataset", "encoder", "default_policy", "policies", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    dataset: str
    encoder: str
    default_policy: Policy
    policies: _containers.RepeatedCompositeFieldContainer[PolicyInfo]
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., dataset: _Optional[str] = ..., encoder: _Optional[str] = ..., default_policy: _Optional[_Union[Policy, str]] = ..., policies: _Optional[_Iterable[_Union[PolicyInfo, _Mapping]]] = ..., is_default: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("texts", "model", "version", "policy", "options")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    version: str
    policy: Policy
    options: _explain_pb2.ExplainOptions
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., policy: _Optional[_Union[Policy, str]] = ..., options: _Optional[_Union[_explain_pb2.ExplainOptions, _Mapping]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("prediction", "attributions")
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    attributions: _containers.RepeatedCompositeFieldContainer[_explain_pb2.Attribution]
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ..., attributions: _Optional[_Iterable[_Union[_explain_pb2.Attribution, _Mapping]]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("model", "version", "policy", "explanations")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    policy: Policy
    explanations: _containers.RepeatedCompositeFieldContainer[Explanation]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., policy: _Optional[_Union[Policy, str]] = ..., explanations: _Optional[_Iterable[_Union[Explanation, _Mapping]]] = ...) -> None: ...
