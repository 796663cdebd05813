"""epochal.spark: the helper every Spark task runs, tested without Spark, and a real
local Spark (``local[2]``) when PySpark and Java are installed (not in CI: PySpark is a
300+ MB install; see the module's docstring for the recipe)."""

from __future__ import annotations

import functools
import shutil

import numpy as np
import pytest

import epochal
from engine_data import assert_same_store, records
from epochal.spark import write_rows


class _Row:
    """What a Spark task's iterator yields: ``asDict()``, binary as bytearray, arrays as lists."""

    def __init__(self, record: dict) -> None:
        self._record = record

    def asDict(self) -> dict:
        return {
            k: bytearray(v)
            if isinstance(v, bytes)
            else v.tolist()
            if isinstance(v, np.ndarray) and v.ndim
            else v
            for k, v in self._record.items()
        }


def _want(ids: np.ndarray) -> list[dict]:
    """The records as Spark hands them back: numpy scalars as Python numbers, arrays as int64."""
    out = []
    for r in records(ids):
        out.append(
            {
                "id": int(r["id"]),
                "image": r["image"].astype(np.int64),
                "score": float(r["score"]),
                "text": r["text"],
                "raw": r["raw"],
            }
        )
    return out


def test_write_rows_is_a_map_partitions_with_index_task(tmp_path):
    n, k = 3000, 3
    ids = np.array_split(np.arange(n), k)
    dest = str(tmp_path / "spark")
    task = functools.partial(write_rows, dest=dest, num_partitions=k, shard_size=20_000)
    # the partitions in any order, one of them twice (a rerun task attempt)
    results = [next(task(i, (_Row(r) for r in _want(ids[i])))) for i in (2, 0, 1, 2)]
    assert [r["records"] for r in results] == [1000] * 4
    with pytest.raises(epochal.Error, match=r"partitions \[1\] of 2"):
        other = str(tmp_path / "missing")
        next(write_rows(0, iter([_Row(_want(ids[0])[0])]), dest=other, num_partitions=2))
        epochal.merge(other)
    epochal.merge(dest)
    epochal.write(_want(np.arange(n)), tmp_path / "want", shard_size=20_000)
    assert_same_store(epochal.open(dest), epochal.open(tmp_path / "want"))


def test_a_real_local_spark(tmp_path):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("PySpark needs Java, which is not installed")
    from pyspark.sql import SparkSession

    import epochal.spark

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    try:
        n = 20_000
        rows = spark.sparkContext.parallelize([_Row(r).asDict() for r in _want(np.arange(n))], 4)
        dest = str(tmp_path / "spark")
        manifest = epochal.spark.write_dataframe(rows, dest, shard_size=64 << 10)
        assert manifest.num_records == n
    finally:
        spark.stop()
    epochal.write(_want(np.arange(n)), tmp_path / "want", shard_size=64 << 10)
    assert_same_store(epochal.open(dest), epochal.open(tmp_path / "want"))
