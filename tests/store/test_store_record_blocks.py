"""Blocks (the engines' columnar path) write the very store the row writer writes.

Same shards at the same records, same bytes, same fingerprint, whatever the blocks'
sizes; Arrow tables and numpy batches convert without per-record Python work and read
back equal to the records they came from.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_records import assert_record_equal, make_record

import epochal
from _budget import examples
from epochal.store import StoreError
from epochal.store._record_blocks import Blocks, as_block, from_arrow, from_records


def _shard_bytes(path, manifest) -> list[bytes]:
    """The store's shard files in manifest order (names carry the build's id; bytes do not)."""
    out = []
    for shard in manifest.shards:
        with open(os.path.join(path, "shards", shard.name), "rb") as f:
            out.append(f.read())
    return out


def _cuts(n: int, points: list[int]) -> list[tuple[int, int]]:
    edges = sorted({0, n, *(p % (n + 1) for p in points)})
    return list(itertools.pairwise(edges))


@settings(max_examples=examples(12), deadline=None)
@given(
    n=st.integers(1, 30),
    points=st.lists(st.integers(0, 1000), max_size=6),
    shard_size=st.sampled_from([1, 700, 3000, 1 << 30]),
)
def test_blocks_write_the_row_writers_store(tmp_path_factory, n, points, shard_size):
    tmp = tmp_path_factory.mktemp("blocks")
    records = [make_record(i) for i in range(n)]
    rows = epochal.write(records, tmp / "rows", shard_size=shard_size)
    blocks = Blocks(from_records(records[a:b]) for a, b in _cuts(n, points))
    cols = epochal.write(blocks, tmp / "blocks", shard_size=shard_size)
    assert cols.fingerprint == rows.fingerprint
    assert [s.records for s in cols.shards] == [s.records for s in rows.shards]
    assert _shard_bytes(tmp / "blocks", cols) == _shard_bytes(tmp / "rows", rows)


def _table(records: list[dict]) -> pa.Table:
    """An Arrow table of the records' columns as an engine would hold them (no Python rows)."""
    out = {}
    for name in records[0]:
        values = [r[name] for r in records]
        first = values[0]
        if isinstance(first, np.ndarray) and first.dtype.kind in "iuf":
            flat = pa.array(np.stack(values).reshape(-1))
            for size in reversed(first.shape):
                flat = pa.FixedSizeListArray.from_arrays(flat, size)
            out[name] = flat
        elif isinstance(first, np.ndarray):  # bool/complex arrays: numpy's own path
            continue
        elif isinstance(first, np.generic):
            out[name] = pa.array(np.array(values))
        else:
            out[name] = pa.array(values)
    return pa.table(out)


@pytest.mark.parametrize("shard_size", [1 << 30, 900])
def test_arrow_tables_equal_the_records(tmp_path, shard_size):
    records = [make_record(i) for i in range(50)]
    table = _table(records)
    kept = table.column_names
    want = [{k: r[k] for k in kept} for r in records]
    rows = epochal.write(want, tmp_path / "rows", shard_size=shard_size)
    got = epochal.write(
        Blocks(table.slice(a, b - a) for a, b in [(0, 7), (7, 31), (31, 50)]),
        tmp_path / "arrow",
        shard_size=shard_size,
    )
    assert got.columns == rows.columns and got.fingerprint == rows.fingerprint
    store = epochal.open(tmp_path / "arrow")
    for i in range(50):
        assert_record_equal(store[i], want[i])


def test_numpy_batches_and_pandas_frames(tmp_path):
    pd = pytest.importorskip("pandas")
    images = np.arange(6 * 2 * 3, dtype=np.uint8).reshape(6, 2, 3)
    batch = {"image": images, "label": np.arange(6), "name": np.array([f"n{i}" for i in range(6)])}
    want = [{"image": images[i], "label": np.int64(i), "name": f"n{i}"} for i in range(6)]
    rows = epochal.write(want, tmp_path / "rows")
    assert epochal.write(Blocks([batch]), tmp_path / "np").fingerprint == rows.fingerprint
    frame = pd.DataFrame({"label": np.arange(6), "name": [f"n{i}" for i in range(6)]})
    block = as_block(frame)
    assert [c.describe() for c in block.columns] == ["scalar[<i8]", "str"]
    assert block.arrays[1].to_pylist() == [f"n{i}" for i in range(6)]


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (pa.array([1, None, 3]), "1 null values"),
        # one level of numbers of varying length is a list column (test_store_lists.py);
        # deeper lists must have one shape
        (pa.array([[[1, 2]], [[3]]]), "lists of different lengths (1 to 2)"),
        (pa.array([["a"], ["b", "c"]]), "lists of different lengths (1 to 2)"),
        (pa.array([{"a": 1}] * 3), "Arrow type struct"),
    ],
)
def test_arrow_columns_a_store_cannot_hold(column, message):
    with pytest.raises(StoreError, match="column 'x'") as info:
        from_arrow(pa.table({"x": column}))
    assert message in str(info.value)


def test_blocks_with_other_columns_name_both(tmp_path):
    blocks = Blocks([pa.table({"x": [1, 2]}), pa.table({"x": [0.5]})])
    with pytest.raises(StoreError, match=r"scalar\[<f8\] x.*expected.*scalar\[<i8\] x"):
        epochal.write(blocks, tmp_path / "s")


def _buffers(array: pa.Array) -> list[bytes | None]:
    return [None if b is None else b.to_pybytes() for b in array.buffers()]


_DTYPES = [
    "bool",
    "int8",
    "uint8",
    "int16",
    "int32",
    "uint32",
    "int64",
    "float16",
    "float32",
    "float64",
]


@settings(max_examples=examples(80), deadline=None)
@given(
    dtype=st.sampled_from(_DTYPES),
    n=st.integers(0, 70),
    seed=st.integers(0, 2**32 - 1),
    step=st.integers(1, 3),
)
def test_numpy_array_has_the_buffers_pa_array_makes(dtype, n, seed, step):
    """The writer builds arrays without pa.array (it imports pandas); the bytes must not move:
    they are the shards' bytes and so the stores' fingerprints."""
    from epochal.store._columns import numpy_array

    raw = np.random.default_rng(seed).integers(0, 256, n * 8 * step, dtype=np.uint8)
    flat = (raw.view(np.uint8) % 2).astype(bool) if dtype == "bool" else raw.view(dtype)
    flat = flat[::step][:n]  # not contiguous when step > 1
    ours, theirs = numpy_array(flat), pa.array(flat)
    assert ours.type == theirs.type
    assert ours.equals(theirs) or np.isnan(flat.astype(np.float64)).any()
    assert _buffers(ours) == _buffers(theirs)


@settings(max_examples=examples(80), deadline=None)
@given(
    values=st.lists(st.text(max_size=6) | st.binary(max_size=6), max_size=30), text=st.booleans()
)
def test_binary_array_has_the_buffers_pa_array_makes(values, text):
    from epochal.store._columns import binary_array

    type_ = pa.large_string() if text else pa.large_binary()
    items = [
        v if isinstance(v, str) == text else (v.decode("latin-1") if text else v.encode())
        for v in values
    ]
    try:
        theirs = pa.array(items, type=type_)
    except (UnicodeEncodeError, pa.ArrowException) as err:  # lone surrogates: refused both ways
        with pytest.raises(type(err)):
            binary_array(items, type_)
        return
    ours = binary_array(items, type_)
    assert ours.equals(theirs)
    assert _buffers(ours) == _buffers(theirs)


def test_a_build_does_not_import_pandas(tmp_path):
    """pyarrow imports pandas (~0.5 s) on the first pa.array of a process: every worker of
    `epochal build --workers N` paid it, which capped the speed-up."""
    pytest.importorskip("pandas")
    src = tmp_path / "d.jsonl"
    src.write_text(
        "".join(f'{{"id": {i}, "t": "x{i}", "v": [{i}, 0.5], "ok": true}}\n' for i in range(50))
    )
    code = (
        "import sys\nfrom epochal.cli import main\n"
        f"assert main(['build', {str(src)!r}, {str(tmp_path / 's')!r}, '--workers', '1']) == 0\n"
        "print('pandas' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip().splitlines()[-1] == "False", run.stdout
