"""Keys: every hash, salt, seed check and key derivation behind epochal's orders.

This module is the compatibility contract of epochal's randomness. The shuffled order,
the per-sample generators, weighted sampling, mixtures, splits, windowed orders and token
window offsets are all functions of a run's ``seed`` through the derivations below;
changing a constant or a derivation changes every run that uses it (golden tests in
``tests/test_order.py``, ``test_rng.py``, ``test_sampling.py``, ``test_mixture.py`` and
``test_views.py`` pin them), so do not.

One hash does it all: splitmix64 (Steele, Lea and Flood's finaliser), as a scalar on
Python ints (:func:`splitmix64`) and vectorised over numpy arrays (:func:`splitmix64_array`).
Each consumer mixes in its own salt, so two consumers of the same ``(seed, epoch)`` draw
unrelated streams. The Feistel rounds of the order use a cheaper keyed multiply-xorshift
(:func:`round_hash`) built from splitmix64's multipliers.
"""

from __future__ import annotations

import numpy as np

from epochal._errors import SeedError

__all__ = [
    "M64",
    "MAX_SEED",
    "check_epoch",
    "check_seed",
    "check_seed_epoch",
    "mixture_keys",
    "order_keys",
    "round_hash",
    "round_keys",
    "salted_key",
    "sample_key",
    "sample_seed",
    "split_seed",
    "splitmix64",
    "splitmix64_array",
    "token_offset_key",
    "uniform",
    "weighted_key",
    "window_keys",
]

MAX_SEED = 1 << 64  # seeds and epochs are integers in [0, MAX_SEED)
M64 = MAX_SEED - 1

# splitmix64's increment (the golden ratio) and multipliers
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
_GOLDEN_U64, _C1_U64, _C2_U64 = np.uint64(_GOLDEN), np.uint64(_C1), np.uint64(_C2)
_MANTISSA = 2.0**-53

# Salts: one per consumer of a seed, so their streams are unrelated. Digits of the
# square roots of primes (SHA-2's constants) and of pi: arbitrary, but fixed forever.
# Two numbers serve twice (sample = window blocks, weighted = token offsets); each use
# mixes its salt into a different derivation, so the streams stay unrelated.
SAMPLE_SALT = 0x6A09E667F3BCC908  # per-sample generators (rng.py)
WEIGHTED_SALT = 0x243F6A8885A308D3  # weighted sampling (sampling.py)
MIX_SALT = 0xA4093822299F31D0  # the sources' orders inside a mixture (mixture.py)
SPLIT_SALT = 0x13198A2E03707344  # a split's permutation (sources/_views.py)
WINDOW_BLOCKS_SALT = 0x6A09E667F3BCC908  # a windowed order's blocks (_windows.py)
WINDOW_SLICES_SALT = 0xBB67AE8584CAA73B  # its window-slice tweaks
WINDOW_FINAL_SALT = 0x3C6EF372FE94F82B  # its final partial batch
TOKEN_OFFSET_SALT = 0x243F6A8885A308D3  # token windows' epoch offsets (token_windows.py)


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` as an int, if it is an integer in ``[0, 2**64)``; else a :class:`SeedError`.

    The one seed rule of epochal: the Loader, orders, samplers, splits, the per-sample
    generators and ``seed_everything`` (``epochal train``) all accept exactly this range.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise SeedError(f"{what} must be an integer in [0, 2**64), got {seed!r}")
    value = int(seed)
    if not 0 <= value < MAX_SEED:
        raise SeedError(f"{what} must be an integer in [0, 2**64), got {value}")
    return value


def check_epoch(epoch: object) -> int:
    """``epoch`` as an int, if it is an integer in ``[0, 2**64)``; else a :class:`SeedError`."""
    return check_seed(epoch, "epoch")


def check_seed_epoch(seed: object, epoch: object) -> tuple[int, int]:
    """``(seed, epoch)`` as ints, both checked by :func:`check_seed`."""
    return check_seed(seed), check_epoch(epoch)


def splitmix64(x: int) -> int:
    """One splitmix64 step on a Python int: a 64-bit bijective hash used to derive keys."""
    x = (x + _GOLDEN) & M64
    x = ((x ^ (x >> 30)) * _C1) & M64
    x = ((x ^ (x >> 27)) * _C2) & M64
    return x ^ (x >> 31)


def splitmix64_array(x: np.ndarray) -> np.ndarray:
    """:func:`splitmix64` of every element of a uint64 array, in place (returns ``x``)."""
    x += _GOLDEN_U64
    x ^= x >> np.uint64(30)
    x *= _C1_U64
    x ^= x >> np.uint64(27)
    x *= _C2_U64
    x ^= x >> np.uint64(31)
    return x


def uniform(key: int, counters: np.ndarray) -> np.ndarray:
    """Uniform floats in ``(0, 1]``, one per counter, keyed by a 64-bit ``key``.

    A vectorised splitmix64 of ``key ^ counter``: the same (key, counter) always gives the
    same value, on every machine, whatever else was drawn.

    Args:
        key: a 64-bit key (e.g. derived from seed and epoch).
        counters: non-negative integers (positions or record indices).
    """
    x = splitmix64_array(np.asarray(counters).astype(np.uint64) ^ np.uint64(key))
    # the top 53 bits, plus one: never 0, so -log(u) stays finite
    return ((x >> np.uint64(11)).astype(np.float64) + 1.0) * _MANTISSA


def round_hash(
    x: np.ndarray, key: np.uint64 | np.ndarray, bits: int, h: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """Top ``bits`` bits of a keyed multiply-xorshift hash of each element of ``x``.

    The Feistel round function of the orders; written in place into the scratch arrays
    ``h`` and ``t`` (the hot loop of the order). ``key`` may be one key or one per element.
    """
    np.bitwise_xor(x, key, out=h)
    h *= _C1_U64
    np.right_shift(h, np.uint64(32), out=t)
    h ^= t
    h *= _C2_U64
    h >>= np.uint64(64 - bits)
    return h


def order_keys(seed: int, epoch: int, rounds: int) -> list[np.uint64]:
    """The round keys of the shuffled order of ``(seed, epoch)`` (checked)."""
    return round_keys(splitmix64(splitmix64(check_seed(seed)) ^ check_epoch(epoch)), rounds)


def round_keys(state: int, rounds: int) -> list[np.uint64]:
    """``rounds`` Feistel round keys from a 64-bit ``state``: its successive splitmix64 steps."""
    keys = []
    for _ in range(rounds):
        state = splitmix64(state)
        keys.append(np.uint64(state))
    return keys


def salted_key(seed: int, epoch: int, salt: int) -> int:
    """The 64-bit key of ``(seed, epoch)`` for the consumer of ``salt`` (unchecked)."""
    return splitmix64(splitmix64(int(seed) ^ salt) ^ splitmix64(int(epoch)))


def sample_key(seed: int, epoch: int) -> int:
    """The key of ``(seed, epoch)`` from which every sample's generator is derived (checked)."""
    # a different derivation from the order's keys: order and augmentation stay unrelated
    return salted_key(check_seed(seed), check_epoch(epoch), SAMPLE_SALT)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The 64-bit seed of the global RNGs around record ``index`` of ``(seed, epoch)``."""
    return splitmix64(sample_key(seed, epoch) ^ splitmix64(int(index)))


def weighted_key(seed: int, epoch: int) -> int:
    """The key of a weighted sampler's draws in ``(seed, epoch)``."""
    return salted_key(seed, epoch, WEIGHTED_SALT)


def mixture_keys(seed: int, epoch: int, k: int) -> tuple[list[int], int]:
    """``(seeds, epoch_key)`` of a mixture of ``k`` sources in ``(seed, epoch)``.

    Source ``i``'s records in its ``c``-th cycle of the epoch are in the shuffled order of
    ``(seeds[i], epoch_key ^ c)``.
    """
    seeds = [splitmix64(seed ^ splitmix64(MIX_SALT + i)) for i in range(k)]
    return seeds, splitmix64(splitmix64(epoch) ^ MIX_SALT)


def split_seed(seed: int) -> int:
    """The seed of the shuffled order (epoch 0) that a split cuts into parts (checked)."""
    return splitmix64(check_seed(seed) ^ SPLIT_SALT)


def window_keys(seed: int, epoch: int) -> tuple[int, int, int]:
    """``(blocks_seed, final_seed, slices_key)`` of the windowed order of ``(seed, epoch)``.

    The blocks and the final partial batch are shuffled orders of ``(blocks_seed, epoch)``
    and ``(final_seed, epoch)``; ``slices_key`` keys the window slices' tweaked bijections.
    """
    return (
        splitmix64(seed ^ WINDOW_BLOCKS_SALT),
        splitmix64(seed ^ WINDOW_FINAL_SALT),
        splitmix64(splitmix64(seed ^ WINDOW_SLICES_SALT) ^ epoch),
    )


def token_offset_key(seed: int, epoch: int) -> int:
    """The key of token windows' stream offset in ``(seed, epoch)``."""
    return splitmix64(seed ^ splitmix64((epoch ^ TOKEN_OFFSET_SALT) & M64))
