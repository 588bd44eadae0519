from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttributionMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTRIBUTION_METHOD_UNSPECIFIED: _ClassVar[AttributionMethod]
    ATTRIBUTION_METHOD_OCCLUSION: _ClassVar[AttributionMethod]
    ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS: _ClassVar[AttributionMethod]
    ATTRIBUTION_METHOD_ATTENTION: _ClassVar[AttributionMethod]
ATTRIBUTION_METHOD_UNSPECIFIED: AttributionMethod
ATTRIBUTION_METHOD_OCCLUSION: AttributionMethod
ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS: AttributionMethod
ATTRIBUTION_METHOD_ATTENTION: AttributionMethod

class ExplainOptions(_message.Message):
    __slots__ = ("methods", "steps", "target_index")
    METHODS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TARGET_INDEX_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedScalarFieldContainer[AttributionMethod]
    steps: int
    target_index: int
    def __init__(self, methods: _Optional[_Iterable[_Union[AttributionMethod, str]]] = ..., steps: _Optional[int] = ..., target_index: _Optional[int] = ...) -> None: ...

class WordAttribution(_message.Message):
    __slots__ = ("word", "start", "end", "score")
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    word: str
    start: int
    end: int
    score: float
    def __init__(self, word: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class Attribution(_message.Message):
    __slots__ = ("method", "target", "target_index", "words", "convergence_delta", "seconds")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TARGET_INDEX_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    CONVERGENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    method: AttributionMethod
    target: str
    target_index: int
    words: _containers.RepeatedCompositeFieldContainer[WordAttribution]
    convergence_delta: float
    seconds: float
    def __init__(self, method: _Optional[_Union[AttributionMethod, str]] = ..., target: _Optional[str] = ..., target_index: _Optional[int] = ..., words: _Optional[_Iterable[_Union[WordAttribution, _Mapping]]] = ..., convergence_delta: _Optional[float] = ..., seconds: _Optional[float] = ...) -> None: ...
