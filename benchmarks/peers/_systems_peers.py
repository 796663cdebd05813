"""Adapters of the libraries with their own format: epochal, Grain, Streaming, LitData, HF.

See ``_systems.py`` for the adapter contract. Each ``_build_*`` writes the dataset in the
library's native random-access format; each ``_open_*`` returns a :class:`Handle`.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _data import FIXED_BYTES, Raw, open_raw

__all__ = ["PEER_SYSTEMS"]

_LABEL = np.dtype("<i8")


def _labels(batch: Any) -> np.ndarray:
    return np.asarray(batch["label"])


def _restore_loader(loader: Any, state: Any) -> Iterator[Any]:
    loader.load_state_dict(state)
    return iter(loader)


# --------------------------------------------------------------------------- epochal


class VarlenSource:
    """An epochal Source over a flat byte file + offsets (what a user would write)."""

    deterministic = True
    fingerprint = "varlen-memmap"

    def __init__(self, raw_root: Path) -> None:
        self.raw_root = raw_root
        self.n = open_raw(raw_root).n
        self._raw: Raw | None = None

    def __len__(self) -> int:
        return self.n

    def _open(self) -> Raw:
        if self._raw is None:
            self._raw = open_raw(self.raw_root)
        return self._raw

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"data": self._open().record(int(i)), "label": int(i)}

    def get_columns(self, indices: np.ndarray) -> dict[str, Any]:
        raw = self._open()
        return {"data": [raw.record(int(i)) for i in indices], "label": indices.copy()}


def _epochal_loader(source: Any, workers: int, seed: int, rank: int, world_size: int) -> Any:
    import epochal

    return epochal.Loader(
        source,
        256 // world_size if world_size > 1 else 256,
        seed=seed,
        num_workers=workers,
        rank=rank,
        world_size=world_size,
    )


def _epochal_handle(loader: Any) -> Any:
    from _systems import Handle

    return Handle(loader, _labels, state=lambda ld, it: ld.state_dict(), restore=_restore_loader)


def _open_epochal(out: Path, raw_root: Path, *, config: str, workers: int, seed: int,
                  rank: int = 0, world_size: int = 1, batch_size: int = 256) -> Any:  # fmt: skip
    import epochal

    raw = open_raw(raw_root)
    if raw.offsets is None:
        source = epochal.from_arrays(data=raw.payload, label=np.arange(raw.n, dtype=np.int64))
    else:
        source = VarlenSource(raw_root)
    return _epochal_handle(_epochal_loader(source, workers, seed, rank, world_size))


def _build_epochal_store(raw: Raw, out: Path) -> None:
    import epochal

    if not hasattr(epochal, "write"):
        raise RuntimeError("epochal.write is not available yet (the store has not landed)")
    if out.exists():
        shutil.rmtree(out)
    epochal.write(raw.records(), str(out))


def _open_epochal_store(out: Path, raw_root: Path, *, config: str, workers: int, seed: int,
                        rank: int = 0, world_size: int = 1) -> Any:  # fmt: skip
    import epochal

    source = epochal.open(str(out))
    return _epochal_handle(_epochal_loader(source, workers, seed, rank, world_size))


# --------------------------------------------------------------------------- Grain


def _encode(record: dict[str, Any]) -> bytes:
    data = record["data"]
    return np.int64(record["label"]).tobytes() + (
        data.tobytes() if isinstance(data, np.ndarray) else data
    )


def _build_arrayrecord(raw: Raw, out: Path) -> None:
    from array_record.python.array_record_module import ArrayRecordWriter

    out.mkdir(parents=True, exist_ok=True)
    # group_size:1 is what Grain's ArrayRecordDataSource asks for (it warns otherwise):
    # each record is its own chunk, so a random read decodes one record
    writer = ArrayRecordWriter(str(out / "data.array_record"), "group_size:1")
    for record in raw.records():
        writer.write(_encode(record))
    writer.close()


def _parse(fixed: bool, data: bytes) -> dict[str, Any]:
    label = int(np.frombuffer(data, _LABEL, 1)[0])
    payload = np.frombuffer(data, np.uint8, offset=8) if fixed else data[8:]
    return {"data": payload, "label": label}


def _parse_batch(fixed: bool, items: Any) -> dict[str, Any]:
    return _collate(fixed, [_parse(fixed, b) for b in items])


def _collate(fixed: bool, records: Any) -> dict[str, Any]:
    labels = np.array([r["label"] for r in records], np.int64)
    if fixed:
        return {"data": np.stack([r["data"] for r in records]), "label": labels}
    return {"data": [r["data"] for r in records], "label": labels}


def _open_grain(out: Path, raw_root: Path, *, config: str, workers: int, seed: int,
                rank: int = 0, world_size: int = 1) -> Any:  # fmt: skip
    import grain
    from _grain_ops import GrainParse
    from _systems import Handle

    fixed = open_raw(raw_root).offsets is None
    source = grain.sources.ArrayRecordDataSource([str(out / "data.array_record")])
    shard = grain.sharding.ShardOptions(shard_index=rank, shard_count=world_size)
    if config == "default":  # the DataLoader API of the quick start
        loader = grain.DataLoader(
            data_source=source,
            sampler=grain.samplers.IndexSampler(
                num_records=len(source),
                shard_options=shard,
                shuffle=True,
                num_epochs=1,
                seed=seed,
            ),
            operations=[GrainParse(fixed), grain.transforms.Batch(256)],
            worker_count=workers,
        )
    else:  # the dataset API with batched reads (ArrayRecord __getitems__) and read threads
        ds = grain.MapDataset.source(source).shuffle(seed=seed)
        if world_size > 1:
            ds = ds[rank::world_size]
        ds = ds.batch(256, batch_fn=functools.partial(_parse_batch, fixed))
        loader = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
        if workers > 0:
            loader = loader.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))

    def state(loader: Any, it: Any) -> Any:
        return it.get_state()

    def restore(loader: Any, state: Any) -> Iterator[Any]:
        it = iter(loader)
        it.set_state(state)
        return it

    return Handle(loader, _labels, state=state, restore=restore)


# --------------------------------------------------------------------------- MosaicML Streaming


def _import_streaming() -> Any:
    """``import streaming``, with a stub for torchvision when the real one cannot load.

    streaming imports its vision module (torchvision's VisionDataset) at import time; no
    torchvision on PyPI loads beside the CPU build of torch 2.13 (requirements-nodeps.txt),
    and nothing benchmarked here uses it.
    """
    import importlib.machinery
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("torchvision") is None and "torchvision" not in sys.modules:
        names = ("torchvision", "torchvision.datasets", "torchvision.transforms",
                 "torchvision.transforms.functional")  # fmt: skip
        for name in names:
            module = types.ModuleType(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = module
        sys.modules["torchvision.datasets"].VisionDataset = object  # type: ignore[attr-defined]
        sys.modules["torchvision.transforms.functional"].to_tensor = None  # type: ignore[attr-defined]
    import streaming

    return streaming


def _build_mds(raw: Raw, out: Path) -> None:
    streaming = _import_streaming()

    if out.exists():
        shutil.rmtree(out)
    columns = {"data": "bytes", "label": "int"}
    with streaming.MDSWriter(out=str(out), columns=columns) as writer:  # default 64 MiB shards
        for record in raw.records():
            data = record["data"]
            writer.write({"data": data.tobytes() if isinstance(data, np.ndarray) else data,
                          "label": record["label"]})  # fmt: skip


def _open_mds(out: Path, raw_root: Path, *, config: str, workers: int, seed: int,
              rank: int = 0, world_size: int = 1) -> Any:  # fmt: skip
    streaming = _import_streaming()
    from _systems import Handle
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    fixed = open_raw(raw_root).offsets is None
    kw: dict[str, Any] = {}
    if config == "tuned":  # single node, small data: the all-to-all "naive" global shuffle
        kw = {"shuffle_algo": "naive"}
    dataset = streaming.StreamingDataset(
        local=str(out), shuffle=True, shuffle_seed=seed, batch_size=256, **kw
    )
    loader = streaming.StreamingDataLoader(
        dataset,
        batch_size=256,
        num_workers=workers,
        collate_fn=functools.partial(_mds_collate, fixed),
        persistent_workers=config == "tuned" and workers > 0,
    )
    return Handle(loader, _labels, state=lambda ld, it: ld.state_dict(), restore=_restore_loader)


def _mds_collate(fixed: bool, records: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    labels = torch.tensor([r["label"] for r in records], dtype=torch.int64)
    if fixed:
        data = np.frombuffer(b"".join(r["data"] for r in records), np.uint8)
        return {"data": torch.from_numpy(data.reshape(-1, FIXED_BYTES).copy()), "label": labels}
    return {"data": [r["data"] for r in records], "label": labels}


def _mds_rank_indices(out: Path, n: int, seed: int, rank: int, world_size: int) -> np.ndarray:
    """The sample ids streaming assigns to ``rank`` (its own partitioning, no processes)."""
    _import_streaming()
    from streaming.base.partition import get_partitions

    ids = get_partitions("orig", n, 1, 1, world_size, 1, 256)  # (nodes, ranks, workers, ...)
    mine = ids[0, rank].reshape(-1)
    return mine[mine >= 0]


# --------------------------------------------------------------------------- LitData


def _litdata_rows(raw_root: str, lo_hi: tuple[int, int]) -> Iterator[dict[str, Any]]:
    raw = open_raw(Path(raw_root))
    for i in range(*lo_hi):
        data = raw.record(i)
        yield {"data": data, "label": i}


def _build_litdata(raw: Raw, out: Path, *, raw_root: Path | None = None) -> None:
    import litdata

    if out.exists():
        shutil.rmtree(out)
    root = raw_root or Path(str(raw.payload.filename)).parent
    step = 5_000
    inputs = [(lo, min(raw.n, lo + step)) for lo in range(0, raw.n, step)]
    litdata.optimize(
        fn=functools.partial(_litdata_rows, str(root)),
        inputs=inputs,
        output_dir=str(out),
        chunk_bytes="64MB",
        num_workers=1,
        mode="overwrite",
    )


def _open_litdata(out: Path, raw_root: Path, *, config: str, workers: int, seed: int,
                  rank: int = 0, world_size: int = 1) -> Any:  # fmt: skip
    import litdata
    from _systems import Handle

    fixed = open_raw(raw_root).offsets is None
    dataset = litdata.StreamingDataset(input_dir=str(out), shuffle=True, seed=seed)
    if world_size > 1:
        from litdata.utilities.env import _DistributedEnv

        dataset.distributed_env = _DistributedEnv(world_size, rank, 1)
    loader = litdata.StreamingDataLoader(
        dataset,
        batch_size=256,
        num_workers=workers,
        collate_fn=functools.partial(_mds_collate, fixed),
        **({"persistent_workers": workers > 0} if config == "tuned" else {}),
    )
    return Handle(loader, _labels, state=lambda ld, it: ld.state_dict(), restore=_restore_loader)


# --------------------------------------------------------------------------- Hugging Face datasets


def _hf_rows(raw_root: str) -> Iterator[dict[str, Any]]:
    raw = open_raw(Path(raw_root))
    for i in range(raw.n):
        yield {"data": raw.record(i), "label": i}


def _build_hf(raw: Raw, out: Path) -> None:
    import datasets

    if out.exists():
        shutil.rmtree(out)
    features = datasets.Features(
        {"data": datasets.Value("binary"), "label": datasets.Value("int64")}
    )
    cache = out.parent / (out.name + ".cache")
    ds = datasets.Dataset.from_generator(
        _hf_rows,
        gen_kwargs={"raw_root": str(Path(str(raw.payload.filename)).parent)},
        features=features,
        cache_dir=str(cache),
    )
    ds.save_to_disk(str(out))
    del ds
    shutil.rmtree(cache, ignore_errors=True)


def _hf_collate(fixed: bool, batch: Any) -> dict[str, Any]:
    """Batches of HF rows (a list of dicts, or one dict of columns) -> data + labels."""
    import torch

    if hasattr(batch, "column"):  # an Arrow table (with_format("arrow"))
        data, labels = batch.column("data").to_pylist(), batch.column("label").to_numpy()
    elif isinstance(batch, dict):
        data, labels = batch["data"], batch["label"]
    else:
        data, labels = [r["data"] for r in batch], [r["label"] for r in batch]
    labels = torch.as_tensor(np.asarray(labels, np.int64))
    if fixed:
        flat = np.frombuffer(b"".join(data), np.uint8).reshape(-1, FIXED_BYTES)
        return {"data": torch.from_numpy(flat.copy()), "label": labels}
    return {"data": list(data), "label": labels}


def _open_hf(out: Path, raw_root: Path, *, config: str, workers: int, seed: int,
             rank: int = 0, world_size: int = 1) -> Any:  # fmt: skip
    import datasets
    import torch
    from _systems import Handle
    from torchdata.stateful_dataloader import StatefulDataLoader

    fixed = open_raw(raw_root).offsets is None
    ds = datasets.load_from_disk(str(out))
    if world_size > 1:
        sampler: Any = torch.utils.data.DistributedSampler(
            range(len(ds)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)  # fmt: skip
    else:
        sampler = torch.utils.data.RandomSampler(
            ds, generator=torch.Generator().manual_seed(seed))  # fmt: skip
    if config == "tuned":  # one ds[list_of_indices] per batch: columns, no per-row dicts
        ds = ds.with_format("arrow")  # ("numpy" would strip binaries' trailing zero bytes)
        loader = StatefulDataLoader(
            ds, batch_size=None, sampler=torch.utils.data.BatchSampler(sampler, 256, False),
            num_workers=workers, persistent_workers=workers > 0,
            collate_fn=functools.partial(_hf_collate, fixed),
        )  # fmt: skip
    else:
        loader = StatefulDataLoader(
            ds, batch_size=256, sampler=sampler, num_workers=workers,
            collate_fn=functools.partial(_hf_collate, fixed),
        )  # fmt: skip
    return Handle(loader, _labels, state=lambda ld, it: ld.state_dict(), restore=_restore_loader)


class _Counter:
    """Counts the rows an iterable dataset reads before sharding (``.map`` runs on each)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        self.count += 1
        return row


def _open_hf_iterable(out: Path, raw_root: Path, *, config: str, workers: int, seed: int,
                      rank: int = 0, world_size: int = 1) -> Any:  # fmt: skip
    import datasets
    from _systems import Handle
    from datasets.distributed import split_dataset_by_node
    from torchdata.stateful_dataloader import StatefulDataLoader

    fixed = open_raw(raw_root).offsets is None
    ds = datasets.load_from_disk(str(out))
    if config == "tuned":  # shard-order shuffle + a larger buffer, as the HF docs suggest
        ids = ds.to_iterable_dataset(num_shards=64).shuffle(seed=seed, buffer_size=10_000)
    else:  # the documented default: one shard, buffer_size=1000
        ids = ds.to_iterable_dataset().shuffle(seed=seed)
    counter = _Counter()
    if world_size > 1:
        ids = split_dataset_by_node(ids.map(counter), rank=rank, world_size=world_size)
    loader = StatefulDataLoader(
        ids, batch_size=256, num_workers=workers, collate_fn=functools.partial(_hf_collate, fixed)
    )
    handle = Handle(loader, _labels, state=lambda ld, it: ld.state_dict(), restore=_restore_loader)
    handle.counter = counter  # type: ignore[attr-defined]
    return handle


# --------------------------------------------------------------------------- registry


def _systems() -> list[Any]:
    from _systems import System, build_nothing

    return [
        System(
            name="epochal",
            title="epochal Loader over a memmap (from_arrays; varlen: a flat-file Source)",
            packages=("epochal",),
            module="epochal",
            build=build_nothing,
            open=_open_epochal,
            settings={"default": "epochal.Loader(source, 256, seed=0, num_workers=w): no knobs"},
            resume="native: Loader.state_dict()/load_state_dict(), O(1)",
            elastic=("workers", "world"),
        ),
        System(
            name="epochal-store",
            title="epochal store (epochal.write / epochal.open, Arrow IPC shards)",
            packages=("epochal",),
            module="epochal",
            build=_build_epochal_store,
            attr="open",
            open=_open_epochal_store,
            settings={"default": "epochal.write(records, path); Loader(epochal.open(path), 256)"},
            resume="native: Loader.state_dict()/load_state_dict(), O(1)",
            elastic=("workers", "world"),
        ),
        System(
            name="grain",
            title="Grain over ArrayRecord",
            packages=("grain", "array-record"),
            module="grain",
            build=_build_arrayrecord,
            open=_open_grain,
            settings={
                "default": "DataLoader(ArrayRecordDataSource, IndexSampler(shuffle=True), "
                "[Map(parse), Batch(256)], worker_count=w), ArrayRecord group_size:1",
                "tuned": "MapDataset.source(...).shuffle().batch(256) (batched __getitems__ "
                "reads) .to_iter_dataset(ReadOptions(num_threads=2, prefetch_buffer_size=4)), "
                "mp_prefetch(num_workers=w)",
            },
            resume="native: iterator get_state()/set_state()",
        ),
        System(
            name="streaming",
            title="MosaicML Streaming (MDS)",
            packages=("mosaicml-streaming",),
            module="streaming",
            build=_build_mds,
            open=_open_mds,
            settings={
                "default": "StreamingDataset(local=..., shuffle=True, batch_size=256) "
                "(shuffle_algo='py1e'), StreamingDataLoader",
                "tuned": "as default + shuffle_algo='naive' (global shuffle, recommended for "
                "single-node small data) + persistent_workers",
            },
            resume="native: StreamingDataLoader.state_dict()/load_state_dict()",
            elastic=("world",),
        ),
        System(
            name="litdata",
            title="LitData (optimize + StreamingDataset)",
            packages=("litdata",),
            module="litdata",
            build=_build_litdata,
            open=_open_litdata,
            settings={
                "default": "optimize(chunk_bytes='64MB'); StreamingDataset(shuffle=True), "
                "StreamingDataLoader(batch_size=256)",
                "tuned": "as default + persistent_workers=True",
            },
            resume="native: StreamingDataLoader.state_dict()/load_state_dict()",
        ),
        System(
            name="hf",
            title="HF datasets, Arrow map-style + DataLoader(shuffle=True)",
            packages=("datasets",),
            module="datasets",
            build=_build_hf,
            open=_open_hf,
            settings={
                "default": "load_from_disk; StatefulDataLoader(ds, 256, shuffle=True) (rows "
                "as Python dicts, batched __getitems__)",
                "tuned": "ds.with_format('arrow'), one ds[indices] per batch (BatchSampler, "
                "batch_size=None): columns, no per-row dicts; persistent_workers",
            },
            resume="native through torchdata StatefulDataLoader",
        ),
        System(
            name="hf-iterable",
            title="HF datasets, to_iterable_dataset().shuffle()",
            packages=("datasets",),
            module="datasets",
            build=_build_hf,
            open=_open_hf_iterable,
            store="hf",
            settings={
                "default": "to_iterable_dataset().shuffle(seed, buffer_size=1000) (1 shard)",
                "tuned": "to_iterable_dataset(num_shards=64).shuffle(seed, buffer_size=10000)",
            },
            resume="native: IterableDataset.state_dict() via StatefulDataLoader (the shuffle "
            "buffer is not saved)",
        ),
    ]


PEER_SYSTEMS = _systems()
