"""Token streams: windows covering every token once per epoch, moving boundaries, documents,
token-proportion mixtures, token stores, exact and elastic resume."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import epochal
from _budget import examples
from _roundtrip import assert_streams_equal, json_roundtrip, run_save_load
from epochal import Error, Loader
from epochal.token_windows import EpochWindows


def _stream(n: int) -> np.ndarray:
    # token t is the number t: a window's content says exactly where it came from
    return np.arange(n, dtype=np.uint32)


def _covered(batches: list[dict], seq_len: int) -> Counter[int]:
    """How often each token is a target in the given batches (padded repeats left out)."""
    counts: Counter[int] = Counter()
    for batch in batches:
        tokens = batch["tokens"][~batch["_repeat"]]
        assert tokens.shape[1] == seq_len + 1
        counts.update(tokens[:, 1:].reshape(-1).tolist())
    return counts


@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize(("n", "seq_len"), [(1000, 16), (1017, 16), (40, 16), (17, 16)])
def test_every_token_is_a_target_once_per_epoch_across_ranks(world_size, n, seq_len):
    src = epochal.tokens(_stream(n), seq_len)
    loaders = [
        Loader(src, 4, seed=3, rank=r, world_size=world_size, with_index=True)
        for r in range(world_size)
    ]
    assert src.uncovered_per_epoch == n - src.tokens_per_epoch < 2 * seq_len
    for epoch in range(3):
        batches = [b for loader in loaders for b in loader]
        counts = _covered(batches, seq_len)
        offset = src.offset(epoch, seed=3)
        span = range(offset + 1, offset + len(src) * seq_len + 1)
        assert sorted(counts) == list(span), f"epoch {epoch}: targets are not the span"
        assert set(counts.values()) == {1}, "a token was a target twice in one epoch"
        assert len(counts) + 1 == src.tokens_per_epoch  # the span's first token is input only
        for batch in batches:  # windows are consecutive tokens of the stream
            t = batch["tokens"].to(torch.int64)
            assert torch.equal(t - t[:, :1], torch.arange(seq_len + 1).expand_as(t))


def test_drop_last_reports_the_windows_it_drops():
    src = epochal.tokens(_stream(1000), 16)  # 61 windows
    loader = Loader(src, 4, seed=0, world_size=2, rank=0, drop_last=True, with_index=True)
    other = Loader(src, 4, seed=0, world_size=2, rank=1, drop_last=True, with_index=True)
    counts = _covered(list(loader) + list(other), 16)
    dropped = len(src) % loader.global_batch_size
    assert len(counts) == (len(src) - dropped) * 16 and set(counts.values()) == {1}


@given(
    n=st.integers(2, 5000),
    seq_len=st.integers(1, 300),
    seed=st.integers(0, 2**64 - 1),
    epoch=st.integers(0, 2**20),
)
@settings(max_examples=examples(200), deadline=None)
def test_windows_tile_the_span_at_any_geometry(n, seq_len, seed, epoch):
    if n < seq_len + 1:
        with pytest.raises(Error, match="shorter than one window"):
            epochal.tokens(_stream(n), seq_len)
        return
    src = epochal.tokens(_stream(n), seq_len)
    view = src.for_epoch(epoch, seed=seed)
    windows = view.get_columns(np.arange(len(view)))["tokens"].astype(np.int64)
    assert windows.shape == (len(src), seq_len + 1)
    assert 0 <= view.offset < seq_len
    expected = view.offset + np.arange(len(src))[:, None] * seq_len + np.arange(seq_len + 1)
    assert np.array_equal(windows, expected)
    assert windows[-1, -1] < n  # never past the end of the stream
    assert src.uncovered_per_epoch < 2 * seq_len


def test_window_boundaries_move_between_epochs():
    src = epochal.tokens(_stream(100_000), 1024)
    offsets = [src.offset(epoch, seed=7) for epoch in range(8)]
    assert len(set(offsets)) == 8, offsets  # 8 distinct offsets out of 1024
    loader = Loader(src, 8, seed=7)
    starts = []
    for _ in range(2):
        starts.append({int(t) for batch in loader for t in batch["tokens"][:, 0]})
    assert starts[0].isdisjoint(starts[1]), "the same window boundaries in two epochs"


def test_another_seed_moves_the_boundaries_too():
    src = epochal.tokens(_stream(100_000), 1024)
    assert len({src.offset(0, seed=s) for s in range(8)}) > 1


def _augment(record, rng):
    # a transform puts the reads in the worker processes (without one, memory gathers
    # are read in-process) and checks the per-sample generator
    return {**record, "noise": rng.integers(0, 1000)}


@pytest.mark.parametrize("transform", [None, _augment])
def test_workers_0_and_2_give_bitwise_identical_batches(transform):
    src = epochal.tokens(_stream(5000), 32, eos_id=7, boundaries=True)
    runs = []
    for workers in (0, 2):
        loader = Loader(src, 8, seed=5, num_workers=workers, transform=transform)
        assert loader.uses_workers == (workers > 0 and transform is not None)
        runs.append([b for _ in range(2) for b in loader])
    assert_streams_equal(runs[0], runs[1])


def test_resume_at_every_batch_equals_the_uninterrupted_run():
    make = lambda: Loader(  # noqa: E731
        epochal.tokens(_stream(700), 16, eos_id=5, boundaries=True, straddle="drop"), 5, seed=11
    )
    run_save_load(make, epochs=3)


def test_resume_with_workers_at_some_batches():
    src = epochal.tokens(_stream(1500), 16)
    make = lambda: Loader(src, 8, seed=2, transform=_augment, num_workers=2)  # noqa: E731
    run_save_load(make, epochs=2, cuts=[7, 15])


def test_elastic_resume_from_4_ranks_to_2():
    src, G = epochal.tokens(_stream(20_000), 16), 32
    first = [Loader(src, G // 4, rank=r, world_size=4, seed=4, with_index=True) for r in range(4)]
    iters = [iter(loader) for loader in first]
    seen = Counter()
    for _ in range(10):
        for it in iters:
            seen.update(next(it)["tokens"][:, 1:].reshape(-1).tolist())
    state = json_roundtrip(first[0].state_dict())
    assert {json.dumps(loader.state_dict()) for loader in first} == {json.dumps(state)}
    rest = Counter()
    for rank in range(2):
        loader = Loader(src, G // 2, rank=rank, world_size=2, seed=4, with_index=True)
        loader.load_state_dict(state)
        rest += _covered(list(loader), 16)
        assert loader.epoch == 1
    total = seen + rest
    assert set(total.values()) == {1} and len(total) + 1 == src.tokens_per_epoch
    offset = src.offset(0, seed=4)
    assert min(total) == offset + 1 and max(total) == offset + len(src) * 16


# a hand-built stream: EOS is 0; documents [5 6 0] [7 8 9 0] [1 2 3 4 5 6 0] [9 ...
_DOCS = np.array(
    [5, 6, 0, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 0, 9, 9, 9, 9, 0, 4, 4, 4, 0, 3], dtype=np.uint16
)


def test_document_boundaries_on_a_hand_built_stream():
    src = epochal.tokens(_DOCS, 6, eos_id=0, boundaries=True, straddle="drop")
    view = EpochWindows(src, 0)  # offset 0: windows at 0, 6, 12
    columns = view.get_columns(np.arange(len(view)))
    assert columns["tokens"].tolist() == [
        [5, 6, 0, 7, 8, 9, 0],
        [0, 1, 2, 3, 4, 5, 6],
        [6, 0, 9, 9, 9, 9, 0],
    ]
    # position of each input token within its document, 0 at the window start and
    # after every EOS input
    assert columns["position_ids"].tolist() == [
        [0, 1, 2, 0, 1, 2],
        [0, 0, 1, 2, 3, 4],
        [0, 1, 0, 1, 2, 3],
    ]
    # pieces in the flattened (3 * 6) inputs
    assert columns["cu_seqlens"].tolist() == [0, 3, 6, 7, 12, 14, 18]
    assert columns["cu_seqlens"].dtype == np.int32
    # targets after a window's first document end are masked (the straddling tail)
    assert columns["loss_mask"].tolist() == [
        [True, True, False, False, False, False],  # targets 6, 0 | 7 8 9 0
        [True, True, True, True, True, True],  # starts on EOS: one document, no end inside
        [True, False, False, False, False, False],  # target 0 ends the document
    ]


def test_documents_as_token_arrays_match_documents_separated_by_eos():
    """doc_offsets (no separator token): a document's last token ends it, as an EOS does."""
    ends = np.flatnonzero(_DOCS == 0)
    offsets = np.concatenate([[0], ends[:-1] + 1, [ends[-1] + 1]])  # the last doc is [3]
    options = {"boundaries": True, "straddle": "drop"}
    by_eos = epochal.tokens(_DOCS, 6, eos_id=0, **options)
    by_offsets = epochal.tokens(_DOCS, 6, doc_offsets=offsets, **options)
    as_arrays = epochal.tokens(
        [_DOCS[a:b] for a, b in zip(offsets, [*offsets[1:], len(_DOCS)])], 6, **options
    )
    assert np.array_equal(as_arrays.doc_offsets, offsets)
    for offset in range(6):
        want = EpochWindows(by_eos, offset).get_columns(np.arange(len(by_eos)))
        for other in (by_offsets, as_arrays):
            got = EpochWindows(other, offset).get_columns(np.arange(len(other)))
            assert want.keys() == got.keys()
            assert all(np.array_equal(want[k], got[k]) for k in want), offset


@pytest.mark.parametrize("offsets", [[1, 5], [0, 5, 5], [0, 30], [[0, 1]]])
def test_bad_doc_offsets_are_refused(offsets):
    with pytest.raises(Error, match="doc_offsets"):
        epochal.tokens(_DOCS, 6, doc_offsets=offsets)


def test_document_columns_reach_the_batch():
    src = epochal.tokens(_DOCS, 6, eos_id=0, boundaries=True, straddle="drop")
    batch = next(iter(Loader(src, 3, shuffle=False, seed=0)))
    assert set(batch) == {"tokens", "position_ids", "cu_seqlens", "loss_mask"}
    assert batch["position_ids"].shape == batch["loss_mask"].shape == (3, 6)
    assert torch.equal(batch["cu_seqlens"], torch.from_numpy(src.cu_seqlens(batch["position_ids"])))
    with_transform = next(iter(Loader(src, 3, shuffle=False, seed=0, transform=_augment)))
    assert "cu_seqlens" not in with_transform  # per-record path: compute it from position_ids
    assert torch.equal(with_transform["position_ids"], batch["position_ids"])


def test_token_mixture_holds_the_proportions_in_every_global_batch():
    web = epochal.tokens(_stream(20_000), 16)
    code = epochal.tokens(_stream(10_000) + 1_000_000, 16)
    mixture = epochal.mix({web: 0.7, code: 0.3})
    loaders = [Loader(mixture, 5, seed=1, world_size=2, rank=r, with_index=True) for r in (0, 1)]
    for epoch in range(2):
        steps = list(zip(*(list(loader) for loader in loaders)))
        assert len(steps) == loaders[0].batches_per_epoch > 50
        for pair in steps:
            index = torch.cat([b["_index"][~b["_repeat"]] for b in pair]).numpy()
            which, local = mixture.locate(index)
            if len(index) == 10:  # every full global batch: 7:3 of its tokens, exactly
                assert np.bincount(which, minlength=2).tolist() == [7, 3]
            tokens = torch.cat([b["tokens"] for b in pair]).numpy()
            for k, source in enumerate((web, code)):  # each window is its source's, this epoch
                expected = source.for_epoch(epoch, seed=1).get_columns(local[which == k])
                assert np.array_equal(tokens[which == k], expected["tokens"])
        assert all(loader.epoch == epoch + 1 for loader in loaders)


def test_token_mixture_resumes_at_every_batch():
    web = epochal.tokens(_stream(400), 8)
    code = epochal.tokens(_stream(200) + 5000, 8)
    run_save_load(lambda: Loader(epochal.mix({web: 2, code: 1}), 6, seed=3), epochs=2)


def test_token_mixture_refuses_mixed_seq_len():
    with pytest.raises(Error, match="one seq_len"):
        epochal.mix({epochal.tokens(_stream(100), 8): 1, epochal.tokens(_stream(100), 16): 1})


def test_a_memmap_file_and_a_raw_file(tmp_path):
    np.save(tmp_path / "t.npy", _stream(500).astype(np.uint16))
    _stream(500).astype(np.uint16).tofile(tmp_path / "t.bin")
    a = epochal.tokens(str(tmp_path / "t.npy"), 16)
    b = epochal.tokens(tmp_path / "t.bin", 16, dtype=np.uint16)
    c = epochal.tokens(_stream(500).astype(np.uint16), 16)
    assert a.fingerprint == b.fingerprint == c.fingerprint
    batches = [
        list(Loader(s, 4, seed=0, transform=_augment, num_workers=w))
        for s, w in ((a, 2), (b, 0), (c, 0))
    ]
    assert_streams_equal(batches[0], batches[1])
    assert_streams_equal(batches[0], batches[2])
    with pytest.raises(Error, match="dtype="):
        epochal.tokens(tmp_path / "t.bin", 16)


def test_a_state_of_another_stream_or_seq_len_is_refused():
    state = Loader(epochal.tokens(_stream(500), 16), 4).state_dict()
    for other in (epochal.tokens(_stream(500), 15), epochal.tokens(_stream(500) + 1, 16)):
        with pytest.raises(epochal.StateError):
            Loader(other, 4).load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seq_len": 0}, "seq_len"),
        ({"seq_len": 8, "boundaries": True}, "eos_id"),
        ({"seq_len": 8, "straddle": "pad"}, "straddle"),
        ({"seq_len": 200}, "shorter than one window"),
    ],
)
def test_bad_arguments_say_what_is_valid(kwargs, match):
    with pytest.raises(Error, match=match):
        epochal.tokens(_stream(100), **kwargs)


def test_float_and_2d_streams_are_refused():
    with pytest.raises(Error, match="integers"):
        epochal.tokens(np.zeros(100), 8)
    with pytest.raises(Error, match="1-D"):
        epochal.tokens(np.zeros((10, 10), dtype=np.int64), 8)
