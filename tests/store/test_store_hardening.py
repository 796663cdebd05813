"""The store against hostile or unlucky use: concurrent writers, failed overwrites, hostile
manifests, single-bit flips in Arrow metadata, and a verify that fails whenever a read would.

Each case is an error naming what is wrong (or, for bit flips in bytes a reader never
uses, the correct data), never wrong data and never a raw Python exception.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_records import make_record

import epochal
from _budget import examples
from epochal.store import CorruptStoreError, Manifest, StoreError
from epochal.store._fs import locate
from epochal.store._reader import StoreSource


def _store(tmp_path, n=40, shard_size=700, name="s"):
    manifest = epochal.write(
        (make_record(i) for i in range(n)), tmp_path / name, shard_size=shard_size
    )
    return tmp_path / name, manifest


def _labels(root) -> list[int]:
    source = epochal.open(root, verify=True)
    return source.get_columns(np.arange(len(source)))["label"].tolist()


def _shard_files(root) -> set[str]:
    return {p.name for p in (root / "shards").iterdir()}


# -- 1. concurrent writers -----------------------------------------------------------------

_RACER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import epochal
    from epochal.store import StoreError

    base, tag, trials = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for t in range(trials):
        go = os.path.join(base, f"go-{t}")
        while not os.path.exists(go):
            time.sleep(0.0005)
        records = ({"label": tag * 1000 + i, "x": np.full(16, tag, np.int64)} for i in range(120))
        try:
            epochal.write(records, os.path.join(base, f"s{t}"), shard_size=300, overwrite=t % 2 == 1)
            result = "ok"
        except StoreError as err:
            result = f"refused {err}"
        with open(os.path.join(base, f"tmp-{tag}"), "w") as f:
            f.write(result)
        os.replace(os.path.join(base, f"tmp-{tag}"), os.path.join(base, f"r{t}-{tag}"))
    """
)


@pytest.mark.slow
def test_two_writer_processes_never_mix_and_the_loser_is_told_who_won(tmp_path):
    """Two real processes start writing the same destination at the same instant, many
    times: a reader always sees exactly one writer's records, and a refused writer gets a
    StoreError naming the other build (never a raw FileNotFoundError)."""
    trials = 16
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path), str(tag), str(trials)])
        for tag in (1, 2)
    ]
    overlaps = 0
    try:
        for t in range(trials):
            (tmp_path / f"go-{t}").touch()
            deadline = time.monotonic() + 60
            while not all((tmp_path / f"r{t}-{tag}").exists() for tag in (1, 2)):
                assert all(p.poll() in (None, 0) for p in procs), "a writer died"
                assert time.monotonic() < deadline
                time.sleep(0.005)
            results = {tag: (tmp_path / f"r{t}-{tag}").read_text() for tag in (1, 2)}
            assert "ok" in results.values(), results
            for tag, result in results.items():
                if result != "ok":
                    other = procs[2 - tag].pid
                    overlaps += "is being written by another" in result
                    assert (
                        ("is being written by another" in result and f"pid {other}" in result)
                        or "another build finished a store" in result
                        or "already holds a finished store" in result
                    ), result
            labels = _labels(tmp_path / f"s{t}")
            assert len(labels) == 120 and len({x // 1000 for x in labels}) == 1, results
            manifest = epochal.open(tmp_path / f"s{t}").manifest
            assert _shard_files(tmp_path / f"s{t}") == {s.name for s in manifest.shards}
    finally:
        for p in procs:
            if p.poll() is None and not all(
                (tmp_path / f"r{trials - 1}-{tag}").exists() for tag in (1, 2)
            ):
                p.kill()
            p.wait(timeout=60)
    assert all(p.returncode == 0 for p in procs)
    assert overlaps >= 1  # the writers really ran at the same time


def test_a_second_writer_is_refused_while_the_first_runs(tmp_path):
    dest = tmp_path / "s"
    seen: list[str] = []

    def records():
        for i in range(50):
            if i == 20:
                with pytest.raises(
                    StoreError, match=r"is being written by another write build"
                ) as e:
                    epochal.write([{"label": 1}], dest)
                seen.append(str(e.value))
            yield {"label": i}

    epochal.write(records(), dest, shard_size=64)
    assert f"pid {os.getpid()}" in seen[0]
    assert _labels(dest) == list(range(50))


def test_a_build_whose_shards_vanish_meanwhile_does_not_commit(tmp_path):
    """As if another build collected them (an object-storage lease that stopped beating)."""
    dest = tmp_path / "s"

    def records():
        for i in range(20):
            if i == 10:
                next((dest / "shards").iterdir()).unlink()
            yield {"label": i}

    with pytest.raises(StoreError, match=r"1 of its shards vanished while it was written"):
        epochal.write(records(), dest, shard_size=32)
    assert not (dest / "manifest.json").exists()


# -- 2. overwrite keeps the old store until the new one is committed ------------------------


def _failing_at_300(kind, root, before):
    for i in range(1000):
        if i == 300:
            assert len(_shard_files(root) - before) >= 2  # the new build had written shards
            if kind == "raise":
                raise RuntimeError("source broke")
            yield {**make_record(i), "label": "not an int"}
        yield make_record(i)


@pytest.mark.parametrize(
    ("kind", "error", "match"),
    [
        ("raise", RuntimeError, "source broke"),
        ("schema", StoreError, r"record 300: column 'label'"),
    ],
)
def test_a_failed_overwrite_leaves_the_old_store_intact(tmp_path, kind, error, match):
    root, manifest = _store(tmp_path, n=30)
    before = _shard_files(root)
    with pytest.raises(error, match=match):
        epochal.write(_failing_at_300(kind, root, before), root, shard_size=20_000, overwrite=True)
    assert _labels(root) == list(range(30))
    assert epochal.open(root).fingerprint == manifest.fingerprint
    assert _shard_files(root) == before  # the failed build removed its own shards


def test_overwrite_replaces_the_store_and_removes_the_old_shards(tmp_path):
    root, old = _store(tmp_path, n=30)
    new = epochal.write(({"label": i} for i in range(5)), root, shard_size=700, overwrite=True)
    assert _labels(root) == list(range(5))
    assert _shard_files(root) == {s.name for s in new.shards}
    assert not {s.name for s in old.shards} & _shard_files(root)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_builds_forked_workers_do_not_keep_its_lease(tmp_path):
    # a build's pool workers are forked while it holds its lease: they inherit the lease
    # file's flock, so before the fix a SIGKILLed build stayed "being written" until its
    # orphaned workers exited
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from epochal.store._fs import locate
        from epochal.store._lease import Lease
        lease = Lease.take(locate({str(tmp_path / "s")!r}), "part-00000-killed", kind="write")
        child = os.fork()
        if child == 0:  # let go of the pipes, so that the test sees the parent end
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            time.sleep(30)
            os._exit(0)
        print(child, flush=True)
        os.kill(os.getpid(), 9)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr
    orphan = int(run.stdout)
    try:
        os.kill(orphan, 0)  # the forked child still runs and still has the file open
        from epochal.store._lease import live_leases

        assert live_leases(locate(tmp_path / "s")) == {}
        epochal.write(({"label": i} for i in range(3)), tmp_path / "s")
        assert len(epochal.open(tmp_path / "s")) == 3
    finally:
        os.kill(orphan, signal.SIGKILL)


@pytest.mark.slow
def test_sigkilled_build_overwrite_leaves_the_old_store_readable(tmp_path):
    root, manifest = _store(tmp_path, n=30)
    big = tmp_path / "big.jsonl"
    big.write_text(
        "".join(json.dumps({"label": i, "text": "x" * 50}) + "\n" for i in range(200_000))
    )
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "epochal",
            "build",
            str(big),
            str(root),
            "--overwrite",
            "--shard-size-mb",
            "0.01",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_shard_files(root) - {s.name for s in manifest.shards}) < 5:
            assert child.poll() is None, "the build finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        workers = _children(child.pid)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert _labels(root) == list(range(30))  # old store intact, killed build's shards ignored
    deadline = time.monotonic() + 10  # its pool workers end too, instead of waiting forever
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers and not any(_running(pid) for pid in workers)
    epochal.write(({"label": i} for i in range(7)), root, overwrite=True)
    assert _labels(root) == list(range(7))
    assert len(_shard_files(root)) == 1  # the dead build's shards were collected


# -- partitions: attempts, merge picks one ----------------------------------------------------


def test_retried_attempts_of_a_partition_merge_to_exactly_one(tmp_path):
    dest = tmp_path / "s"
    epochal.write(
        ({"label": i} for i in range(3)), dest, partition=0, num_partitions=2, attempt="a1"
    )
    epochal.write(
        ({"label": i} for i in range(3)), dest, partition=0, num_partitions=2, attempt="a0"
    )
    with pytest.raises(StoreError, match=r"partitions \[1\] of 2 are not written yet"):
        epochal.merge(dest)

    def dies():
        yield {"label": 3}
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError):
        epochal.write(dies(), dest, partition=1, num_partitions=2, attempt="b0")
    epochal.write(({"label": i} for i in range(3, 6)), dest, partition=1, num_partitions=2)
    manifest = epochal.merge(dest)
    assert _labels(dest) == list(range(6))
    # the first committed attempt of partition 0 is kept; the other's files are gone
    assert manifest.shards[0].name.split("-")[2] == "a1"
    assert _shard_files(dest) == {s.name for s in manifest.shards}
    assert not os.listdir(dest / "_partitions")


def test_a_running_attempt_keeps_its_files_through_a_merge(tmp_path):
    dest = tmp_path / "s"
    epochal.write([{"label": 0}], dest, partition=0, num_partitions=1, attempt="done")

    def slow():
        yield {"label": 0}
        merged.append(epochal.merge(dest))  # meanwhile, the driver merges
        yield {"label": 1}

    merged: list[Manifest] = []
    epochal.write(slow(), dest, shard_size=8, partition=0, num_partitions=1, attempt="late")
    assert _labels(dest) == [0]  # the merge kept attempt "done"
    assert any("-late-" in name for name in _shard_files(dest))  # not deleted under it
    epochal.write([{"label": 5}], dest, overwrite=True)
    assert not any("-late-" in name for name in _shard_files(dest))


@pytest.mark.parametrize("attempt", ["a-b", "../x", "", "x" * 65])
def test_attempt_ids_that_are_not_file_name_safe_are_refused(tmp_path, attempt):
    with pytest.raises(ValueError, match="attempt must be"):
        epochal.write([{"x": 1}], tmp_path, partition=0, num_partitions=1, attempt=attempt)


# -- 4. hostile manifests --------------------------------------------------------------------


def _edit_json(root, edit) -> None:
    body = json.loads((root / "manifest.json").read_text())
    edit(body)
    (root / "manifest.json").write_text(json.dumps(body))


def _careful(root, manifest: Manifest, **changes) -> None:
    """A consistent edit (counts and fingerprint recomputed), as a careful hand edit."""
    (root / "manifest.json").write_bytes(dataclasses.replace(manifest, **changes).to_bytes())


def _set(path, value):
    def edit(body):
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _delete(path):
    def edit(body):
        target = body
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


_HOSTILE = {
    "bool-version": (_set(["version"], True), "bad format version"),
    "float-num-records": (_set(["num_records"], 40.0), "num_records must be an integer"),
    "huge-num-records": (_set(["num_records"], 10**20), "num_records must be an integer"),
    "records-1e20": (_set(["shards", 0, "records"], 10**20), r"records must be an integer in"),
    "records-2^62": (_set(["shards", 0, "records"], 2**62), r"records must be an integer in"),
    "float-records": (_set(["shards", 0, "records"], 3.0), r"records must be an integer in"),
    "negative-bytes": (_set(["shards", 0, "bytes"], -5), r"bytes must be an integer in"),
    "missing-dtype": (_delete(["columns", 0, "dtype"]), r"column 'image' has dtype None"),
    "big-endian": (_set(["columns", 0, "dtype"], ">u1"), r"has dtype '>u1'"),
    "object-dtype": (_set(["columns", 0, "dtype"], "|O"), r"has dtype '\|O'"),
    "zero-shape": (_set(["columns", 0, "shape"], [4, 0, 3]), r"has shape \[4, 0, 3\]"),
    "bool-shape": (_set(["columns", 0, "shape"], [True, 5, 3]), r"has shape \[True, 5, 3\]"),
    "huge-shape": (_set(["columns", 0, "shape"], [10**6] * 3), "bytes per record"),
    "no-shards": (_set(["shards"], []), "shards must be a non-empty list"),
    "no-columns": (_set(["columns"], []), "columns must be a non-empty list"),
    "traversal-name": (
        _set(["shards", 0, "name"], "../../../etc/passwd"),
        "is not a shard file name",
    ),
    "absolute-name": (_set(["shards", 0, "name"], "/etc/passwd"), "is not a shard file name"),
    "nul-in-name": (
        _set(["shards", 0, "name"], "part-00000-a\x00b-000000.arrow"),
        "is not a shard file name",
    ),
    "traversal-xxh3": (_set(["shards", 0, "xxh3"], "../../x"), "xxh3 must be 16 hex digits"),
    "metadata-list": (_set(["metadata"], [1]), "metadata must be an object"),
    "kind-garbage": (_set(["columns", 1, "kind"], "pickle"), "has kind 'pickle'"),
}


@pytest.mark.parametrize("case", list(_HOSTILE))
def test_hostile_manifest_fields_are_refused_naming_the_field(tmp_path, case):
    root, _ = _store(tmp_path)
    edit, match = _HOSTILE[case]
    _edit_json(root, edit)
    with pytest.raises(CorruptStoreError, match=match) as err:
        epochal.open(root)
    assert "\n" not in str(err.value)
    with pytest.raises(CorruptStoreError, match=match):
        epochal.verify(root)


def _reshaped(manifest):
    return tuple(
        dataclasses.replace(c, shape=(5, 4, 3)) if c.name == "image" else c
        for c in manifest.columns
    )


def _swapped_order(manifest):
    shards = list(manifest.shards)
    shards[0], shards[1] = shards[1], shards[0]
    return tuple(shards)


def _swapped_names(manifest):
    """Names swapped between two shards of equal size and count: only the names move."""
    shards = list(manifest.shards)
    a, b = shards[0], shards[1]
    assert (a.records, a.bytes) == (b.records, b.bytes)
    shards[0], shards[1] = (
        dataclasses.replace(a, name=b.name, xxh3=b.xxh3),
        dataclasses.replace(b, name=a.name, xxh3=a.xxh3),
    )
    return tuple(shards)


def _off_by_one(manifest):
    shards = list(manifest.shards)
    shards[1] = dataclasses.replace(shards[1], records=shards[1].records + 1)
    return tuple(shards)


def _other_dtype(manifest):
    return tuple(
        dataclasses.replace(c, dtype="<i4") if c.name == "label" else c for c in manifest.columns
    )


_CAREFUL = {
    "reshape-(4,5,3)->(5,4,3)": ("columns", _reshaped, "was written with columns"),
    "swapped-shard-order": ("shards", _swapped_order, "is out of order"),
    "swapped-shard-names": ("shards", _swapped_names, "is out of order|is a different shard"),
    "record-count-off-by-one": ("shards", _off_by_one, r"has \d+ records, the manifest says"),
    "dtype-changed": ("columns", _other_dtype, "has schema"),
}


@pytest.mark.parametrize("case", list(_CAREFUL))
def test_consistent_manifest_edits_that_change_meaning_fail_reads_and_verify(tmp_path, case):
    """Edits with counts and fingerprint recomputed: every read fails on first use, and
    ``verify`` fails too (it used to say "ok" for several of these)."""
    if case == "swapped-shard-names":  # fixed-size records: shards of equal size
        root = tmp_path / "s"
        records = ({"label": i, "image": np.full((4, 5, 3), i, np.uint8)} for i in range(40))
        manifest = epochal.write(records, root, shard_size=680)
    else:
        root, manifest = _store(tmp_path, n=40, shard_size=2000)
    field, change, match = _CAREFUL[case]
    _careful(root, manifest, **{field: change(manifest)})
    with pytest.raises(CorruptStoreError, match=match):
        source = epochal.open(root)
        source.get_columns(np.arange(len(source)))
    with pytest.raises(CorruptStoreError, match=match):
        epochal.verify(root)


def test_shard_files_swapped_on_disk_are_caught_on_first_use(tmp_path):
    """Equal-size shards whose files traded places: sizes match, only the position each
    shard records in its own metadata tells them apart (without verify's checksums)."""
    root = tmp_path / "s"
    records = ({"label": i, "image": np.full((4, 5, 3), i, np.uint8)} for i in range(40))
    manifest = epochal.write(records, root, shard_size=680)
    a, b = (root / "shards" / s.name for s in manifest.shards[:2])
    assert a.stat().st_size == b.stat().st_size
    a.rename(tmp_path / "x")
    b.rename(a)
    (tmp_path / "x").rename(b)
    with pytest.raises(
        CorruptStoreError, match=r"is a different shard \(written as '00000-000001'"
    ):
        epochal.open(root)[0]


def test_a_str_column_with_invalid_utf8_is_an_error_naming_the_shard(tmp_path):
    root = tmp_path / "s"
    manifest = epochal.write([{"text": "abcdef"}, {"text": "ghijkl"}], root)
    path = root / "shards" / manifest.shards[0].name
    data = path.read_bytes()
    at = data.index(b"ghijkl")
    path.write_bytes(data[:at] + b"\xff" + data[at + 1 :])
    _careful(root, manifest, shards=(dataclasses.replace(manifest.shards[0], xxh3=_xxh3(path)),))
    source = epochal.open(root)
    assert source[0]["text"] == "abcdef"
    for read in (lambda: source[1], lambda: source.get_columns(np.array([0, 1]))):
        with pytest.raises(
            CorruptStoreError, match=r"column 'text' of record 1 is not valid UTF-8"
        ):
            read()
    with pytest.raises(CorruptStoreError, match=r"(?i)invalid utf-?8"):
        epochal.verify(root)


def _xxh3(path) -> str:
    import xxhash

    return xxhash.xxh3_64_hexdigest(path.read_bytes())


def test_a_shard_that_is_a_directory_is_an_error(tmp_path):
    root, manifest = _store(tmp_path)
    path = root / "shards" / manifest.shards[0].name
    path.unlink()
    path.mkdir()
    with pytest.raises(CorruptStoreError, match=r"cannot be read|not a regular file"):
        epochal.open(root, verify=True)
    with pytest.raises(CorruptStoreError, match="cannot be read"):
        epochal.verify(root)
    with pytest.raises(CorruptStoreError, match="not a regular file"):
        epochal.open(root)[0]


# -- 3. every single-bit flip in a shard's metadata: an error, or the correct data -----------


def _sweep_store(tmp_path):
    rng = np.random.default_rng(0)
    records = [
        {
            "a": rng.integers(0, 100, size=(2, 3)).astype(np.int16),
            "n": i * 3 - 4,
            "f": i % 2 == 0,
            "c": np.complex64(i + 2j),
            "t": f"t{i}" * i,
            "b": bytes(range(i)),
        }
        for i in range(5)
    ]
    manifest = epochal.write(records, tmp_path / "s")
    assert len(manifest.shards) == 1
    return tmp_path / "s", manifest


def _data_ranges(path, manifest) -> list[tuple[int, int]]:
    """(start, stop) in the file of every data buffer: the bytes that are not metadata."""
    import pyarrow as pa

    mapped = pa.memory_map(str(path))
    base = mapped.read_buffer(8).address
    batch = pa.ipc.open_file(mapped).get_batch(0)
    return [
        (b.address - base, b.address - base + b.size)
        for column in batch.columns
        for b in column.buffers()
        if b is not None and b.size
    ]


def test_every_single_bit_flip_in_shard_metadata_is_an_error_or_the_correct_data(tmp_path):
    root, manifest = _sweep_store(tmp_path)
    path = root / "shards" / manifest.shards[0].name
    original = path.read_bytes()
    loc = locate(root)
    want = StoreSource(loc, manifest).get_columns(np.arange(5))
    data_bytes = {i for a, b in _data_ranges(path, manifest) for i in range(a, b)}
    metadata = [i for i in range(len(original)) if i not in data_bytes]
    assert len(metadata) > 500
    errors = same = 0
    wrong: list[tuple[int, int]] = []
    fd = os.open(path, os.O_RDWR)  # flip in place: rewriting the file each time is too slow
    try:
        for offset in metadata:
            for bit in range(8):
                os.pwrite(fd, bytes([original[offset] ^ (1 << bit)]), offset)
                try:
                    got = StoreSource(loc, manifest).get_columns(np.arange(5))
                except CorruptStoreError:
                    errors += 1
                    continue
                finally:
                    os.pwrite(fd, original[offset : offset + 1], offset)
                if _equal(got, want):
                    same += 1
                else:
                    wrong.append((offset, bit))
    finally:
        os.close(fd)
    assert not wrong, f"{len(wrong)} flips returned wrong data, e.g. at (byte, bit) {wrong[:5]}"
    assert errors > 0 and same > 0
    assert path.read_bytes() == original


def _equal(got, want) -> bool:
    for name, value in want.items():
        other = got[name]
        if isinstance(value, np.ndarray):
            if not (
                isinstance(other, np.ndarray)
                and other.dtype == value.dtype
                and other.shape == value.shape
                and np.array_equal(other, value)
            ):
                return False
        elif other != value or [type(x) for x in other] != [type(x) for x in value]:
            return False
    return True


def test_a_buffer_offset_moved_inside_the_body_is_caught(tmp_path):
    """The attack pass's case: a buffer's offset in the record batch metadata moved so that
    the column reads another part of the body. Found by patching the metadata directly."""
    root, manifest = _sweep_store(tmp_path)
    path = root / "shards" / manifest.shards[0].name
    data = bytearray(path.read_bytes())
    ranges = _data_ranges(path, manifest)
    body = ranges[0][0]
    # the metadata stores each buffer as (offset, length) int64 pairs relative to the body
    a_off, a_len = ranges[0][0] - body, ranges[0][1] - ranges[0][0]
    b_off = ranges[1][0] - body
    needle = np.array([a_off, a_len], dtype="<i8").tobytes()
    at = bytes(data).index(needle, 0, body)
    data[at : at + 8] = np.array([b_off], dtype="<i8").tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match="has a buffer at byte"):
        StoreSource(locate(root), manifest).get_columns(np.arange(5))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


_BASE = json.loads(
    Manifest(
        columns=(
            epochal.store.Column(name="image", kind="array", dtype="|u1", shape=(4, 4)),
            epochal.store.Column(name="label", kind="scalar", dtype="<i8"),
            epochal.store.Column(name="text", kind="str"),
        ),
        shards=tuple(
            epochal.store.Shard(
                name=f"part-00000-abc-{k:06d}.arrow", records=10, bytes=999, xxh3="0" * 16
            )
            for k in range(2)
        ),
    ).to_bytes()
)
_BASE_PATHS = [p for p in _paths(_BASE) if p]


@settings(max_examples=examples(400), deadline=None)
@given(which=st.integers(0, len(_BASE_PATHS) - 1), value=_JSON)
def test_any_value_in_any_manifest_field_is_an_epochal_error_or_harmless(which, value):
    """Property: whatever JSON value replaces whatever field, parsing the manifest raises a
    StoreError (one line) or yields a manifest whose every field is still valid."""
    body = json.loads(json.dumps(_BASE))
    *parents, last = _BASE_PATHS[which]
    target = body
    for key in parents:
        target = target[key]
    target[last] = value
    try:
        manifest = Manifest.from_bytes(json.dumps(body).encode(), where="m")
    except StoreError as err:
        assert "\n" not in str(err)
        return
    assert manifest.num_records == 20 and len(manifest.shards) == 2
    for shard in manifest.shards:
        assert shard.name.startswith("part-00000-abc-") and "/" not in shard.name


@pytest.mark.parametrize("where", ["local", "memory"])
def test_put_encoded_returns_the_files_bytes_and_a_failed_encode_leaves_nothing(tmp_path, where):
    loc = locate(str(tmp_path / "s") if where == "local" else f"memory://put-encoded-{os.getpid()}")
    data = loc.put_encoded(lambda out: out.write(b"shard bytes " * 1000), "shards", "a.arrow")
    assert bytes(data) == loc.read("shards", "a.arrow") == b"shard bytes " * 1000

    def broken(out):
        out.write(b"half a shard")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        loc.put_encoded(broken, "shards", "b.arrow")
    assert loc.listdir("shards") == ["a.arrow"]  # no b.arrow, no temporary file
    if where == "local":
        assert sorted(os.listdir(tmp_path / "s" / "shards")) == ["a.arrow"]
