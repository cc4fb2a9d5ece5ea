"""The answer of GetFeatures as NumPy arrays, a float matrix or plain Python values (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._column import Column, ColumnValues
from ._errors import malformed
from ._types import status_name
from .v1 import feature_service_pb2 as pb


class FeatureResult:
    """The features of a batch of entity rows, one column per feature.

    Fixed-width columns are read straight from the response's bytes: `values()` and `to_numpy()`
    make no Python object per value. A row "holds a value" (`valid()`) when its status is
    PRESENT, when it is NOT_FOUND or STALE and the column carries the rule's default, or when it
    is MASKED by hash; other rows hold a zero or empty placeholder in `values()`.
    """

    def __init__(self, response: pb.GetFeaturesResponse) -> None:
        if not isinstance(response, pb.GetFeaturesResponse):
            raise TypeError(
                f"FeatureResult needs a featuresidecar.v1 GetFeaturesResponse, "
                f"got {type(response).__name__}"
            )
        names = tuple(response.feature_names)
        if len(names) != len(response.columns):
            raise malformed(f"{len(names)} feature names but {len(response.columns)} columns")
        rows = int(response.row_count)
        columns: dict[str, Column] = {}
        for name, message in zip(names, response.columns, strict=True):
            if name in columns:
                raise malformed(f"feature {name!r} appears twice")
            columns[name] = Column(name, message, rows)
        self.response = response
        self.feature_names = names
        self.row_count = rows
        self.policy_revision = int(response.policy_revision)
        self._columns = columns

    def __repr__(self) -> str:
        return (
            f"FeatureResult(row_count={self.row_count}, "
            f"feature_names={list(self.feature_names)!r}, "
            f"policy_revision={self.policy_revision})"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._columns

    def type(self, name: str) -> str:
        """The column's value type, lower case: "double", "float_list", ..."""
        return self._column(name).kind.name

    def values(self, name: str) -> ColumnValues:
        """The column's values in its own dtype, placeholders included (see `valid`).

        Fixed-width scalars: a read-only NumPy view over the response bytes (int32, int64,
        float32, float64, bool, datetime64[ns]). Strings and bytes: a list. Lists: a list of
        per-row arrays (views) or per-row lists of str/bytes.
        """
        return self._column(name).values()

    def valid(self, name: str) -> npt.NDArray[np.bool_]:
        """Which rows hold a value."""
        return self._column(name).valid()

    def statuses(self, name: str) -> npt.NDArray[np.uint8]:
        """One `Status` number per row (read-only view)."""
        return self._column(name).statuses()

    def status_names(self, name: str) -> list[str]:
        return [status_name(number) for number in self._column(name).statuses().tolist()]

    def event_times(self, name: str) -> npt.NDArray[np.datetime64]:
        """When each row's value was written, datetime64[ns] UTC; NaT where nothing is stored."""
        return self._column(name).event_times()

    def matrix(
        self, name: str, *, dim: int | None = None, dtype: npt.DTypeLike | None = None
    ) -> npt.NDArray[Any]:
        """A numeric list feature as rows x dim, NaN rows where no value.

        Every row with a value must hold `dim` elements (found from the rows when not given).
        The dtype defaults to the list's own float type (float64 for int and bool lists).
        """
        return self._column(name).matrix(dim, dtype)

    def embedding(
        self, name: str, *, dim: int | None = None, dtype: npt.DTypeLike | None = None
    ) -> npt.NDArray[Any]:
        """Same as `matrix`: an embedding is an equal-length float list."""
        return self.matrix(name, dim=dim, dtype=dtype)

    def to_numpy(
        self, features: Sequence[str] | None = None, dtype: npt.DTypeLike = np.float64
    ) -> npt.NDArray[Any]:
        """Rows x features of numeric scalar features, NaN where a row holds no value."""
        names = self._names(features)
        out_dtype = np.dtype(dtype)
        if out_dtype.kind != "f":
            raise TypeError(
                f"to_numpy(dtype=...): needs a floating dtype to hold NaN, got {out_dtype}"
            )
        columns = [self._column(name) for name in names]
        wrong = [f"{c.name} ({c.describe()})" for c in columns if not c.numeric]
        if wrong:
            raise TypeError(
                "to_numpy() takes numeric scalar features (int32, int64, float, double, bool); "
                f"not numeric: {', '.join(wrong)}. Read those with values() or matrix()"
            )
        out = np.empty((self.row_count, len(columns)), dtype=out_dtype)
        for index, column in enumerate(columns):
            cells = out[:, index]
            np.copyto(cells, column.elements(), casting="unsafe")
            # copyto(where=) writes through the strided column view in place.
            np.copyto(cells, np.nan, where=~column.valid())
        return out

    def to_dict(self) -> dict[str, list[Any]]:
        """{feature: one Python value per row, None where none}; timestamps as UTC datetimes."""
        return {name: column.python_values() for name, column in self._columns.items()}

    def to_rows(self) -> list[dict[str, Any]]:
        """One {feature: value} dict per entity row, in request order."""
        table = self.to_dict()
        return [{name: table[name][row] for name in table} for row in range(self.row_count)]

    def _names(self, features: Sequence[str] | None) -> tuple[str, ...]:
        if features is None:
            return self.feature_names
        if isinstance(features, str) or not isinstance(features, Sequence):
            raise TypeError("features: expected a sequence of feature names (wrap one in a list)")
        return tuple(features)

    def _column(self, name: str) -> Column:
        column = self._columns.get(name)
        if column is None:
            known = ", ".join(self.feature_names) or "none"
            raise KeyError(f"{name!r} is not a feature of this result (it has: {known})")
        return column
