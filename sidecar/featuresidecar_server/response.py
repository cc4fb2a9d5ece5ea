"""A decoded column as the wire's FeatureColumn (pure)."""

from __future__ import annotations

import numpy as np

from featuresidecar.v1 import feature_service_pb2 as pb

from .codec import Column


def column_message(column: Column) -> pb.FeatureColumn:
    kind = column.kind
    timestamps = column.timestamps
    if timestamps is None:
        timestamps = np.zeros(column.rows, dtype=np.int64)
    message = pb.FeatureColumn(
        type=kind.number,  # type: ignore[arg-type]
        statuses=column.statuses.tobytes(),
        event_timestamps=timestamps.astype("<i8", copy=False).tobytes(),
        has_default=column.has_default,
        mask=column.mask,  # type: ignore[arg-type]
    )
    if column.data is not None:
        message.data = column.data.astype(kind.dtype, copy=False).tobytes()
    elif column.items:
        if kind.element == "string":
            message.strings.extend(column.items)
        else:
            message.binaries.extend(column.items)
    if column.offsets is not None:
        message.offsets = column.offsets.astype("<u4", copy=False).tobytes()
    return message
