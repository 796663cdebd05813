"""One adapter per system: how it writes the dataset and how it loads a shuffled epoch.

Every adapter's loader yields, per batch, the int64 labels of the records it delivered
(the label of record ``i`` is ``i``), after touching the payload the way a training step
would (the payload is materialised as a tensor, a numpy array or bytes). Adapters import
their library lazily, so listing the systems works in an environment without the peers.

An adapter has two configurations: ``default`` (what the quick-start shows) and ``tuned``
(the settings its documentation recommends for fast random access); ``SETTINGS`` says
which is which, and the report prints it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _data import Raw, open_raw

__all__ = ["SYSTEMS", "Handle", "System", "available", "build_nothing", "get_system", "versions"]


class Handle:
    """A loader for one epoch: iterate batches of labels; save and restore its position."""

    touched: int | None = None  # records read from storage, where the adapter can count them

    def __init__(
        self,
        loader: Any,
        labels: Callable[[Any], np.ndarray],
        *,
        state: Callable[[Any, Any], Any] | None = None,
        restore: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        self.loader, self._labels = loader, labels
        self._state, self._restore = state, restore
        self._it: Iterator[Any] | None = None

    @property
    def stateful(self) -> bool:
        return self._state is not None

    def batches(self) -> Iterator[np.ndarray]:
        """Batches of labels from the current position to the end of the epoch."""
        if self._it is None:
            self._it = iter(self.loader)
        for batch in self._it:
            yield np.asarray(self._labels(batch), dtype=np.int64)

    def state_dict(self) -> Any:
        assert self._state is not None
        return self._state(self.loader, self._it)

    def load_state_dict(self, state: Any) -> None:
        assert self._restore is not None
        self._it = self._restore(self.loader, state)


@dataclass(frozen=True)
class System:
    """A peer (or epochal, or the baseline) as the harness sees it."""

    name: str
    title: str
    packages: tuple[str, ...]  # distributions whose versions the report lists
    module: str  # what must import for the system to be available
    build: Callable[[Raw, Path], None]
    open: Callable[..., Handle]  # (out, raw_root, *, config, workers, seed, rank, world_size)
    settings: dict[str, str]  # config name -> the settings it uses, for the report
    resume: str  # how the system resumes mid-epoch ("native: ...", or "none: ...")
    elastic: tuple[str, ...] = ()  # "workers" / "world": a resume change the system claims
    kinds: tuple[str, ...] = ("fixed", "varlen")
    attr: str = ""  # an attribute the module must have (a feature that may not have landed)
    store: str = ""  # the name of another system whose written dataset this one reads

    @property
    def store_name(self) -> str:
        return self.store or self.name


def available(system: System) -> tuple[bool, str]:
    """Whether ``system``'s library imports here; else the reason."""
    if importlib.util.find_spec(system.module) is None:
        return False, f"module {system.module!r} is not installed in {_python()}"
    if system.attr:
        module = importlib.import_module(system.module)
        if not hasattr(module, system.attr):
            return False, f"{system.module}.{system.attr} is not available in this version yet"
    return True, ""


def versions(system: System) -> dict[str, str]:
    out = {}
    for package in system.packages:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _python() -> str:
    import sys

    return sys.executable


# --------------------------------------------------------------------------- helpers


def _raw_labels(batch: Any) -> np.ndarray:
    return np.asarray(batch[1] if isinstance(batch, (tuple, list)) else batch["label"])


def _decode(raw: Raw, payload: bytes | np.ndarray) -> Any:
    """A fixed record becomes a uint8 array (as a model would want it); varlen stays bytes."""
    if raw.offsets is None:
        return np.frombuffer(payload, np.uint8) if isinstance(payload, bytes) else payload
    return payload


class MemmapDataset:
    """The everyday map-style torch Dataset over a numpy memmap (one record per call).

    ``batched=True`` adds ``__getitems__`` (torch >= 2.2 calls it with a whole batch of
    indices): one fancy-index gather per batch, returned already collated.
    """

    def __init__(self, raw_root: Path, *, batched: bool = False) -> None:
        self.raw_root, self.batched = raw_root, batched
        self._raw: Raw | None = None

    @property
    def raw(self) -> Raw:
        if self._raw is None:  # opened lazily: safe after fork
            self._raw = open_raw(self.raw_root)
        return self._raw

    def __len__(self) -> int:
        return open_raw(self.raw_root).n if self._raw is None else self._raw.n

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch

        raw = self.raw
        if raw.offsets is None:
            return torch.from_numpy(np.array(raw.payload[i])), i
        return raw.record(i), i

    def __getattr__(self, name: str) -> Any:
        if name == "__getitems__" and self.__dict__.get("batched"):
            return self._getitems
        raise AttributeError(name)

    def _getitems(self, indices: list[int]) -> tuple[Any, Any]:
        import torch

        raw, idx = self.raw, np.asarray(indices, dtype=np.int64)
        if raw.offsets is None:
            return torch.from_numpy(raw.payload[idx]), torch.from_numpy(idx)
        return [raw.record(int(i)) for i in idx], torch.from_numpy(idx)


def _identity(batch: Any) -> Any:
    return batch


def _torch_loader(dataset: Any, config: str, workers: int, seed: int, **kw: Any) -> Any:
    import torch

    tuned = config == "tuned"
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=256,
        shuffle=kw.pop("shuffle", True),
        num_workers=workers,
        generator=generator,
        collate_fn=_identity if tuned else None,
        persistent_workers=tuned and workers > 0,
        **kw,
    )


def _dist_sampler(n: int, rank: int, world_size: int, seed: int) -> Any:
    import torch

    return torch.utils.data.DistributedSampler(
        range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed
    )


# --------------------------------------------------------------------------- numpy baseline


def build_nothing(raw: Raw, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)


class _BaselineLoader:
    """Not a loader: a shuffled gather straight from the memmap, batch by batch."""

    def __init__(self, raw_root: Path, seed: int, rank: int, world_size: int) -> None:
        self.raw = open_raw(raw_root)
        self.order = np.random.default_rng(seed).permutation(self.raw.n)[rank::world_size]

    def __iter__(self) -> Iterator[np.ndarray]:
        import torch

        raw = self.raw
        for lo in range(0, len(self.order), 256):
            idx = self.order[lo : lo + 256]
            if raw.offsets is None:
                torch.from_numpy(raw.payload[idx])
            else:
                [raw.payload[raw.offsets[i] : raw.offsets[i + 1]].tobytes() for i in idx]
            yield idx


def _open_baseline(out: Path, raw_root: Path, *, config: str, workers: int, seed: int,
                   rank: int = 0, world_size: int = 1) -> Handle:  # fmt: skip
    return Handle(_BaselineLoader(raw_root, seed, rank, world_size), lambda b: b)


# --------------------------------------------------------------------------- plain PyTorch


def _open_torch(out: Path, raw_root: Path, *, config: str, workers: int, seed: int,
                rank: int = 0, world_size: int = 1) -> Handle:  # fmt: skip
    dataset = MemmapDataset(raw_root, batched=config == "tuned")
    kw: dict[str, Any] = {}
    if world_size > 1:
        kw = {"sampler": _dist_sampler(len(dataset), rank, world_size, seed), "shuffle": False}
    return Handle(_torch_loader(dataset, config, workers, seed, **kw), _raw_labels)


class FileDataset:
    """One file per record (the ImageFolder habit): ``root/<i // 1000>/<i>.bin``."""

    def __init__(self, root: Path, n: int, fixed: bool) -> None:
        self.root, self.n, self.fixed = root, n, fixed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch

        data = (self.root / str(i // 1000) / f"{i}.bin").read_bytes()
        if self.fixed:
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), i
        return data, i


def _build_files(raw: Raw, out: Path) -> None:
    for i in range(raw.n):
        folder = out / str(i // 1000)
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.bin").write_bytes(raw.record(i))


def _open_files(out: Path, raw_root: Path, *, config: str, workers: int, seed: int,
                rank: int = 0, world_size: int = 1) -> Handle:  # fmt: skip
    raw = open_raw(raw_root)
    dataset = FileDataset(out, raw.n, raw.offsets is None)
    kw: dict[str, Any] = {"persistent_workers": workers > 0} if config == "tuned" else {}
    if world_size > 1:
        kw |= {"sampler": _dist_sampler(raw.n, rank, world_size, seed), "shuffle": False}
    import torch

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=256,
        shuffle=kw.pop("shuffle", True),
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )
    return Handle(loader, _raw_labels)


# --------------------------------------------------------------------------- torchdata


def _open_torchdata(out: Path, raw_root: Path, *, config: str, workers: int, seed: int,
                    rank: int = 0, world_size: int = 1) -> Handle:  # fmt: skip
    import torch
    from torchdata.stateful_dataloader import StatefulDataLoader

    tuned = config == "tuned"
    dataset = MemmapDataset(raw_root, batched=tuned)
    kw: dict[str, Any] = {"shuffle": True, "generator": torch.Generator().manual_seed(seed)}
    if world_size > 1:
        kw = {"sampler": _dist_sampler(len(dataset), rank, world_size, seed)}
    loader = StatefulDataLoader(
        dataset,
        batch_size=256,
        num_workers=workers,
        collate_fn=_identity if tuned else None,
        persistent_workers=tuned and workers > 0,
        **kw,
    )

    def restore(loader: Any, state: Any) -> Iterator[Any]:
        loader.load_state_dict(state)
        return iter(loader)

    return Handle(loader, _raw_labels, state=lambda ld, it: ld.state_dict(), restore=restore)


# --------------------------------------------------------------------------- LMDB


def _build_lmdb(raw: Raw, out: Path) -> None:
    import lmdb

    out.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(out), map_size=max(1 << 30, raw.nbytes * 2), subdir=True)
    for lo in range(0, raw.n, 10_000):
        with env.begin(write=True) as txn:
            for i in range(lo, min(raw.n, lo + 10_000)):
                txn.put(b"%010d" % i, raw.record(i))
    env.sync()
    env.close()


class LmdbDataset:
    """Map-style Dataset over an LMDB environment, opened lazily in each process."""

    def __init__(self, path: Path, n: int, fixed: bool, tuned: bool) -> None:
        self.path, self.n, self.fixed, self.tuned = path, n, fixed, tuned
        self._env: Any = None

    def _open(self) -> Any:
        import lmdb

        if self._env is None:
            if self.tuned:  # the py-lmdb docs' settings for random reads of a read-only env
                self._env = lmdb.open(
                    str(self.path), readonly=True, lock=False, readahead=False, meminit=False
                )
            else:
                self._env = lmdb.open(str(self.path), readonly=True)
        return self._env

    def __len__(self) -> int:
        return self.n

    def _value(self, data: bytes) -> Any:
        import torch

        return torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.fixed else data

    def __getitem__(self, i: int) -> tuple[Any, int]:
        with self._open().begin(buffers=False) as txn:
            return self._value(txn.get(b"%010d" % i)), i

    def __getattr__(self, name: str) -> Any:
        if name == "__getitems__" and self.__dict__.get("tuned"):
            return self._getitems
        raise AttributeError(name)

    def _getitems(self, indices: list[int]) -> tuple[Any, Any]:
        import torch

        with self._open().begin() as txn:
            values = [txn.get(b"%010d" % i) for i in indices]
        labels = torch.tensor(indices, dtype=torch.int64)
        if self.fixed:
            return torch.frombuffer(bytearray(b"".join(values)), dtype=torch.uint8), labels
        return values, labels


def _open_lmdb(out: Path, raw_root: Path, *, config: str, workers: int, seed: int,
               rank: int = 0, world_size: int = 1) -> Handle:  # fmt: skip
    raw = open_raw(raw_root)
    dataset = LmdbDataset(out, raw.n, raw.offsets is None, config == "tuned")
    kw: dict[str, Any] = {}
    if world_size > 1:
        kw = {"sampler": _dist_sampler(raw.n, rank, world_size, seed), "shuffle": False}
    return Handle(_torch_loader(dataset, config, workers, seed, **kw), _raw_labels)


# --------------------------------------------------------------------------- registry

from _systems_peers import PEER_SYSTEMS  # noqa: E402  (the adapters of the peer libraries)

_TORCH_SETTINGS = {
    "default": "Dataset.__getitem__ per record + DataLoader(batch_size=256, shuffle=True)",
    "tuned": "Dataset.__getitems__ (one fancy-index gather per batch, collated in the "
    "Dataset) + persistent_workers=True",
}

SYSTEMS: list[System] = [
    System(
        name="numpy",
        title="numpy memmap gather (baseline)",
        packages=("numpy",),
        module="numpy",
        build=build_nothing,
        open=_open_baseline,
        settings={"default": "payload[idx] per batch of a numpy permutation, no loader"},
        resume="n/a: the baseline is not a loader",
    ),
    System(
        name="torch",
        title="PyTorch Dataset over a memmap + DataLoader",
        packages=("torch",),
        module="torch",
        build=build_nothing,
        open=_open_torch,
        settings=_TORCH_SETTINGS,
        resume="none: DataLoader has no state (restart the epoch, or replay the sampler)",
    ),
    System(
        name="torch-files",
        title="PyTorch, one file per record",
        packages=("torch",),
        module="torch",
        build=_build_files,
        open=_open_files,
        settings={
            "default": "open()+read() per record, DataLoader(batch_size=256, shuffle=True)",
            "tuned": "as default + persistent_workers=True",
        },
        resume="none: DataLoader has no state",
    ),
    System(
        name="torchdata",
        title="torchdata StatefulDataLoader over the memmap Dataset",
        packages=("torchdata",),
        module="torchdata",
        build=build_nothing,
        open=_open_torchdata,
        settings=_TORCH_SETTINGS,
        resume="native: StatefulDataLoader.state_dict()/load_state_dict()",
    ),
    *PEER_SYSTEMS,
    System(
        name="lmdb",
        title="LMDB (one key per record) + DataLoader",
        packages=("lmdb",),
        module="lmdb",
        build=_build_lmdb,
        open=_open_lmdb,
        settings={
            "default": "lmdb.open(readonly=True), one transaction per record",
            "tuned": "lmdb.open(readonly=True, lock=False, readahead=False, meminit=False), "
            "one transaction per batch (__getitems__), persistent_workers=True",
        },
        resume="none: DataLoader has no state",
    ),
]


def get_system(name: str) -> System:
    for system in SYSTEMS:
        if system.name == name:
            return system
    raise ValueError(f"unknown system {name!r}; expected one of {[s.name for s in SYSTEMS]}")
