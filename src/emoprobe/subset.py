"""The rows a dataset's probes see: all of the prepared table, or with `subset: correct_only`
the texts a model answered correctly (its own module, so that editing it reruns the probes, not
the preparation of every dataset)."""

from __future__ import annotations

import numpy as np
import polars as pl

from .data.prepare import apply_row_checks, check_classes_left, class_size_checks
from .errors import DataError


def correct_only_rows(answers: pl.DataFrame, table: pl.DataFrame, checks: dict) -> np.ndarray:
    """The prepared-table rows a `subset: correct_only` probes: those the model answered correctly
    (`answers`, the answers table: id and correct per row of `table`), less the texts of classes
    then too small to probe (class_size_checks with `checks["cv_folds"]`, None for no fold check),
    refused or dropped as `checks["spec"]["bad_rows"]` says; two classes must be left."""
    if answers.height != table.height or not answers["id"].equals(table["id"]):
        raise DataError(f"the answers ({answers.height} rows) are not those of the prepared table ({table.height} "
                        "rows, other ids); delete the model's extraction parts for this dataset and rerun.")
    spec = checks["spec"]
    subset = table.with_row_index("_row").filter(answers["correct"])
    answered_correctly = subset.height
    try:
        subset = apply_row_checks(subset, class_size_checks(subset, checks["cv_folds"], spec), spec["bad_rows"])
        check_classes_left(sorted(set(subset["label"].to_list())), sorted(set(table["label"].to_list())),
                           ["subset: correct_only"])
    except DataError as exc:
        raise DataError(f"subset correct_only (the {answered_correctly} texts the model answered correctly): {exc}") from None
    return subset["_row"].to_numpy()
