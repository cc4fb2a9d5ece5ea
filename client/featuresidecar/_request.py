"""A GetFeaturesRequest from Python arguments, checked before anything is sent (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from .v1 import feature_service_pb2 as pb

EntityValues: TypeAlias = Sequence[int] | Sequence[str] | npt.NDArray[Any]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def features_request(
    features: Sequence[str] | None,
    entities: Mapping[str, EntityValues] | None,
    feature_service: str | None,
    allow_partial: bool,
) -> pb.GetFeaturesRequest:
    message = pb.GetFeaturesRequest(allow_partial=bool(allow_partial))
    if feature_service is not None:
        if not isinstance(feature_service, str) or not feature_service:
            raise TypeError(f"feature_service: expected a non-empty str, got {feature_service!r}")
        if features is not None:
            raise ValueError("features and feature_service are exclusive: pass one of them")
        message.feature_service = feature_service
    elif features is None:
        raise ValueError("features: name at least one feature, or pass feature_service=")
    else:
        message.features.extend(_features(features))
    _entities(message, entities)
    return message


def _features(features: Sequence[str]) -> list[str]:
    if isinstance(features, str) or not isinstance(features, Sequence):
        raise TypeError(
            "features: expected a sequence of 'view:feature' strings, "
            f"got {type(features).__name__}"
            + (" (wrap a single feature in a list)" if isinstance(features, str) else "")
        )
    if not features:
        raise ValueError("features: name at least one feature, or pass feature_service=")
    for index, ref in enumerate(features):
        if not isinstance(ref, str):
            raise TypeError(f"features[{index}]: expected a str, got {type(ref).__name__}")
    return list(features)


def _entities(message: pb.GetFeaturesRequest, entities: Mapping[str, EntityValues] | None) -> None:
    if entities is None:
        raise TypeError("entities: required, a mapping of join key -> one value per row")
    if not isinstance(entities, Mapping):
        raise TypeError(
            f"entities: expected a mapping of join key -> values, got {type(entities).__name__}"
        )
    if not entities:
        raise ValueError("entities: empty; give each join key the features need")
    rows = -1
    first = ""
    for name, values in entities.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"entities: join key {name!r} is not a non-empty str")
        ints, strings = _column(f"entities[{name!r}]", values)
        count = len(ints) if ints is not None else len(strings or ())
        if rows < 0:
            rows, first = count, name
        elif count != rows:
            raise ValueError(
                f"entities[{name!r}] has {count} values but entities[{first!r}] has {rows}; "
                "every join key needs one value per row"
            )
        column = message.entities[name]
        if ints is not None:
            column.int64_values.values.extend(ints)
        else:
            column.string_values.values.extend(strings or ())


def _column(where: str, values: Any) -> tuple[list[int] | None, list[str] | None]:
    """(ints, None) or (None, strings); entity values are never echoed (they may be personal)."""
    if isinstance(values, np.ndarray):
        return _array(where, values)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(
            f"{where}: expected a sequence (list, tuple, NumPy array) of values, one per row, "
            f"got {type(values).__name__}"
        )
    if not values:
        raise ValueError(f"{where}: no values; a call needs at least one entity row")
    if isinstance(values[0], str):
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise TypeError(_mixed(where, index, value, "str"))
        return None, list(values)
    ints: list[int] = []
    for index, value in enumerate(values):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
            raise TypeError(_mixed(where, index, value, "int"))
        number = int(value)
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise ValueError(f"{where}[{index}]: the value is out of the int64 range")
        ints.append(number)
    return ints, None


def _array(where: str, values: npt.NDArray[Any]) -> tuple[list[int] | None, list[str] | None]:
    if values.ndim != 1:
        raise ValueError(f"{where}: expected a 1-D array, got shape {values.shape}")
    if values.size == 0:
        raise ValueError(f"{where}: no values; a call needs at least one entity row")
    kind = values.dtype.kind
    if kind in "iu":
        if kind == "u" and int(values.max()) > _INT64_MAX:
            raise ValueError(f"{where}: holds values above the int64 range")
        ints: list[int] = values.astype(np.int64).tolist()
        return ints, None
    if kind == "U":
        strings: list[str] = values.tolist()
        return None, strings
    if kind == "O":
        listed = values.tolist()
        return _column(where, listed)
    raise TypeError(
        f"{where}: a {values.dtype} array cannot hold join key values; use an int64 or str array"
    )


def _mixed(where: str, index: int, value: object, expected: str) -> str:
    return (
        f"{where}[{index}]: is of type {type(value).__name__}, but the column holds {expected} "
        "values; join key values are all int or all str"
    )
