from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_STATUS_UNSPECIFIED: _ClassVar[FeatureStatus]
    PRESENT: _ClassVar[FeatureStatus]
    NULL_VALUE: _ClassVar[FeatureStatus]
    NOT_FOUND: _ClassVar[FeatureStatus]
    STALE: _ClassVar[FeatureStatus]
    MASKED: _ClassVar[FeatureStatus]
    DENIED: _ClassVar[FeatureStatus]

class ValueType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_TYPE_UNSPECIFIED: _ClassVar[ValueType]
    BYTES: _ClassVar[ValueType]
    STRING: _ClassVar[ValueType]
    INT32: _ClassVar[ValueType]
    INT64: _ClassVar[ValueType]
    DOUBLE: _ClassVar[ValueType]
    FLOAT: _ClassVar[ValueType]
    BOOL: _ClassVar[ValueType]
    TIMESTAMP: _ClassVar[ValueType]
    BYTES_LIST: _ClassVar[ValueType]
    STRING_LIST: _ClassVar[ValueType]
    INT32_LIST: _ClassVar[ValueType]
    INT64_LIST: _ClassVar[ValueType]
    DOUBLE_LIST: _ClassVar[ValueType]
    FLOAT_LIST: _ClassVar[ValueType]
    BOOL_LIST: _ClassVar[ValueType]
    TIMESTAMP_LIST: _ClassVar[ValueType]

class MaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MASK_NONE: _ClassVar[MaskKind]
    MASK_HASH: _ClassVar[MaskKind]
    MASK_REDACT: _ClassVar[MaskKind]
FEATURE_STATUS_UNSPECIFIED: FeatureStatus
PRESENT: FeatureStatus
NULL_VALUE: FeatureStatus
NOT_FOUND: FeatureStatus
STALE: FeatureStatus
MASKED: FeatureStatus
DENIED: FeatureStatus
VALUE_TYPE_UNSPECIFIED: ValueType
BYTES: ValueType
STRING: ValueType
INT32: ValueType
INT64: ValueType
DOUBLE: ValueType
FLOAT: ValueType
BOOL: ValueType
TIMESTAMP: ValueType
BYTES_LIST: ValueType
STRING_LIST: ValueType
INT32_LIST: ValueType
INT64_LIST: ValueType
DOUBLE_LIST: ValueType
FLOAT_LIST: ValueType
BOOL_LIST: ValueType
TIMESTAMP_LIST: ValueType
MASK_NONE: MaskKind
MASK_HASH: MaskKind
MASK_REDACT: MaskKind

class GetFeaturesRequest(_message.Message):
    __slots__ = ("features", "feature_service", "entities", "allow_partial")
    class EntitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: EntityColumn
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[EntityColumn, _Mapping]] = ...) -> None: ...
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[str]
    feature_service: str
    entities: _containers.MessageMap[str, EntityColumn]
    allow_partial: bool
    def __init__(self, features: _Optional[_Iterable[str]] = ..., feature_service: _Optional[str] = ..., entities: _Optional[_Mapping[str, EntityColumn]] = ..., allow_partial: _Optional[bool] = ...) -> None: ...

class EntityColumn(_message.Message):
    __slots__ = ("int64_values", "string_values")
    INT64_VALUES_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUES_FIELD_NUMBER: _ClassVar[int]
    int64_values: Int64Values
    string_values: StringValues
    def __init__(self, int64_values: _Optional[_Union[Int64Values, _Mapping]] = ..., string_values: _Optional[_Union[StringValues, _Mapping]] = ...) -> None: ...

class Int64Values(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class StringValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class GetFeaturesResponse(_message.Message):
    __slots__ = ("feature_names", "columns", "policy_revision", "row_count")
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    columns: _containers.RepeatedCompositeFieldContainer[FeatureColumn]
    policy_revision: int
    row_count: int
    def __init__(self, feature_names: _Optional[_Iterable[str]] = ..., columns: _Optional[_Iterable[_Union[FeatureColumn, _Mapping]]] = ..., policy_revision: _Optional[int] = ..., row_count: _Optional[int] = ...) -> None: ...

class FeatureColumn(_message.Message):
    __slots__ = ("type", "statuses", "event_timestamps", "data", "strings", "binaries", "offsets", "has_default", "mask")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    BINARIES_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    HAS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    type: ValueType
    statuses: bytes
    event_timestamps: bytes
    data: bytes
    strings: _containers.RepeatedScalarFieldContainer[str]
    binaries: _containers.RepeatedScalarFieldContainer[bytes]
    offsets: bytes
    has_default: bool
    mask: MaskKind
    def __init__(self, type: _Optional[_Union[ValueType, str]] = ..., statuses: _Optional[bytes] = ..., event_timestamps: _Optional[bytes] = ..., data: _Optional[bytes] = ..., strings: _Optional[_Iterable[str]] = ..., binaries: _Optional[_Iterable[bytes]] = ..., offsets: _Optional[bytes] = ..., has_default: _Optional[bool] = ..., mask: _Optional[_Union[MaskKind, str]] = ...) -> None: ...

class ListFeaturesRequest(_message.Message):
    __slots__ = ("view", "tag")
    VIEW_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    view: str
    tag: str
    def __init__(self, view: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class ListFeaturesResponse(_message.Message):
    __slots__ = ("features", "feature_services", "entities", "policy_revision")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SERVICES_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[FeatureInfo]
    feature_services: _containers.RepeatedCompositeFieldContainer[FeatureServiceInfo]
    entities: _containers.RepeatedCompositeFieldContainer[EntityInfo]
    policy_revision: int
    def __init__(self, features: _Optional[_Iterable[_Union[FeatureInfo, _Mapping]]] = ..., feature_services: _Optional[_Iterable[_Union[FeatureServiceInfo, _Mapping]]] = ..., entities: _Optional[_Iterable[_Union[EntityInfo, _Mapping]]] = ..., policy_revision: _Optional[int] = ...) -> None: ...

class FeatureInfo(_message.Message):
    __slots__ = ("ref", "view", "name", "type", "description", "owner", "tags", "entities", "join_keys", "max_age_seconds", "dim")
    REF_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    JOIN_KEYS_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    ref: str
    view: str
    name: str
    type: ValueType
    description: str
    owner: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    entities: _containers.RepeatedScalarFieldContainer[str]
    join_keys: _containers.RepeatedScalarFieldContainer[str]
    max_age_seconds: int
    dim: int
    def __init__(self, ref: _Optional[str] = ..., view: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[_Union[ValueType, str]] = ..., description: _Optional[str] = ..., owner: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., entities: _Optional[_Iterable[str]] = ..., join_keys: _Optional[_Iterable[str]] = ..., max_age_seconds: _Optional[int] = ..., dim: _Optional[int] = ...) -> None: ...

class FeatureServiceInfo(_message.Message):
    __slots__ = ("name", "description", "features")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class EntityInfo(_message.Message):
    __slots__ = ("name", "join_keys", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    JOIN_KEYS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    join_keys: _containers.RepeatedCompositeFieldContainer[JoinKey]
    description: str
    def __init__(self, name: _Optional[str] = ..., join_keys: _Optional[_Iterable[_Union[JoinKey, _Mapping]]] = ..., description: _Optional[str] = ...) -> None: ...

class JoinKey(_message.Message):
    __slots__ = ("name", "type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: ValueType
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[ValueType, str]] = ...) -> None: ...
