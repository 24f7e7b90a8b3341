"""Word n-gram hashes of many texts at once, in numpy: the decontamination gate's sieve.

The gate (distill/evaluate/contamination.py) checks every training text for the n-grams
of the benchmark. Doing that word by word in Python (a tuple and a hash per n-gram)
cost three times as much as reading and tokenising the data. Here a batch of texts is one
byte buffer, and a few array passes give every word's hash, every n-gram's hash and a
table lookup per n-gram. The texts whose n-grams may be in the index are returned; the
gate checks only those, exactly, with its word-by-word code. So a hash collision costs a
needless exact check, never a finding, and no text holding an indexed n-gram is missed:
equal word sequences always hash equally.

Words are what `contamination.normalize_words` gives: runs of letters and digits after
NFKC and lowercasing. For an ASCII text that is a byte rule ([A-Za-z0-9], A-Z lowered), so
its bytes are hashed as they are. Other texts are normalised in Python (NFKC, lowercase),
and in their UTF-8 the bytes of non-ASCII characters that are not letters or digits
(curly quotes, dashes) are turned into spaces; the bytes of the others are word bytes.

    sieve = GramSieve([b"gull island at noon ..."], n=13)         # the benchmark's runs
    candidates([encode(t, normalize) for t in texts], [sieve])   # indices of texts to check
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# Bytes that belong to words (A-Z are lowered first, with bytes.lower).
_WORD_BYTE = np.zeros(256, dtype=bool)
for _low, _high in ((0x30, 0x39), (0x61, 0x7A), (0x80, 0xFF)):
    _WORD_BYTE[_low:_high + 1] = True

# Odd 64-bit multipliers (arithmetic wraps modulo 2**64, where odd numbers are invertible).
_HEAD = np.uint64(0x9E3779B97F4A7C15)
_TAIL = np.uint64(0xC2B2AE3D27D4EB4F)
_MIX = np.uint64(0xBF58476D1CE4E5B9)
_WORD_BASE = 0x94D049BB133111EB
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
# Table slots per key (at least): about 1 in 16 unindexed n-grams passes the table and is
# looked up in the sorted keys; a larger table falls out of the CPU caches.
_SLOTS_PER_KEY = 16


class _Powers:
    """base**i and base**-i modulo 2**64 for i < length, grown on demand."""

    def __init__(self, base: int):
        self.base, self.inverse = np.uint64(base), np.uint64(pow(base, -1, 2**64))
        self.tables = (np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64))

    def get(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        up, down = self.tables  # replaced whole, so threads never see half a growth
        if len(up) < length:
            size = max(length, 2 * len(up))
            up, down = np.ones(size, dtype=np.uint64), np.ones(size, dtype=np.uint64)
            np.cumprod(np.full(size - 1, self.base), out=up[1:])
            np.cumprod(np.full(size - 1, self.inverse), out=down[1:])
            self.tables = (up, down)
        return up[:length], down[:length]


_WORD_POWERS = _Powers(_WORD_BASE)


def encode(text: str, normalize: Callable[[str], str]) -> bytes:
    """The bytes whose words (as `word_hashes` splits them) are `text`'s normalised words.

    `normalize` (NFKC, lowercase) is applied to a text that is not ASCII only: NFKC leaves
    ASCII as it is, and `word_hashes` lowers A-Z itself.
    """
    return text.encode("ascii") if text.isascii() else normalize(text).encode("utf-8")


def word_hashes(buffer: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(hash of each word, byte offset where it starts) in `buffer`.

    A word's hash mixes its first 8 bytes, its last 8 bytes and its length: three reads
    per word instead of arithmetic per byte. Longer words that agree in all three collide,
    which the sieve's users tolerate (a collision only costs an exact check).
    """
    # One non-word byte in front and eight behind: every word has an edge on both sides,
    # and an 8-byte read at any word start stays inside the buffer.
    data = np.frombuffer(b" " + buffer.lower() + b" " * 8, dtype=np.uint8)
    high = data >= 0x80
    if high.any():
        data = _blank_non_word_characters(data, high)
    inside = _WORD_BYTE[data]
    edges = np.flatnonzero(inside[1:] != inside[:-1]) + 1
    starts, ends = edges[0::2], edges[1::2]
    lengths = (ends - starts).astype(np.uint64)
    rows = np.lib.stride_tricks.as_strided(data, shape=(len(data) - 7, 8), strides=(1, 1))
    head = rows[starts].view("<u8").ravel()
    head &= _ONES >> (np.uint64(64) - np.uint64(8) * np.minimum(lengths, np.uint64(8)))
    hashes = head * _HEAD + lengths
    long = np.flatnonzero(lengths > 8)  # the head holds all of a shorter word
    hashes[long] += rows[ends[long] - 8].view("<u8").ravel() * _TAIL
    hashes ^= hashes >> np.uint64(31)
    hashes *= _MIX
    hashes ^= hashes >> np.uint64(29)
    return hashes, starts - 1


# UTF-8 run of non-ASCII characters -> the same with its non-word characters as spaces
# (None: all are word characters). Runs repeat (’, —, “), so each is worked out once.
_RUNS: dict[bytes, bytes | None] = {}


def _blank_non_word_characters(data: np.ndarray, high: np.ndarray) -> np.ndarray:
    """`data` with the bytes of non-alphanumeric non-ASCII characters set to spaces.

    Those characters are where `normalize_words` splits; after this the word bytes are
    exactly the bytes of words.
    """
    data = data.copy()
    edges = np.flatnonzero(high[1:] != high[:-1]) + 1  # high[0] is the leading space
    for start, end in zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True):
        run = data[start:end].tobytes()
        if run not in _RUNS:
            if len(_RUNS) > 100_000:
                _RUNS.clear()
            chars = run.decode("utf-8")  # a run of bytes >= 0x80 holds whole characters
            _RUNS[run] = None if chars.isalnum() else "".join(
                c if c.isalnum() else " " * len(c.encode("utf-8")) for c in chars
            ).encode("utf-8")
        blanked = _RUNS[run]
        if blanked is not None:
            data[start:end] = np.frombuffer(blanked, dtype=np.uint8)
    return data


def gram_hashes(words: np.ndarray, n: int) -> np.ndarray:
    """Hash of each run of `n` consecutive word hashes (len(words) - n + 1 of them)."""
    if len(words) < n:
        return np.zeros(0, dtype=np.uint64)
    up, down = _WORD_POWERS.get(len(words))
    prefix = np.zeros(len(words) + 1, dtype=np.uint64)
    # sum(w[j] * B**j) over the run, times B**-start: the same for the run anywhere.
    np.cumsum(words * up, out=prefix[1:])
    return (prefix[n:] - prefix[:-n]) * down[:len(words) - n + 1]


def _words(buffers: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash of each word, its byte offset, each buffer's byte offset) over all `buffers`."""
    joined = b"\n".join(buffers)  # a non-word byte: no word runs across two buffers
    lengths = np.fromiter(map(len, buffers), dtype=np.int64, count=len(buffers)) + 1
    buffer_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return *word_hashes(joined), buffer_starts


def _owners(runs: np.ndarray, n: int, starts: np.ndarray, buffer_starts: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """(runs that lie inside one buffer, that buffer) of the runs of `n` words at `runs`."""
    first = np.searchsorted(buffer_starts, starts[runs], side="right") - 1
    last = np.searchsorted(buffer_starts, starts[runs + n - 1], side="right") - 1
    inside = first == last
    return runs[inside], first[inside]


class GramSieve:
    """The sorted hashes of indexed word runs of one length, and a table in front of them."""

    def __init__(self, pieces: Sequence[bytes], n: int, *, whole: bool = False):
        """Index every `n`-word run of each piece, or with `whole` only its first `n` words."""
        self.n = n
        keys = np.zeros(0, dtype=np.uint64)
        if pieces:
            words, starts, piece_starts = _words(pieces)
            keys = gram_hashes(words, n)
            runs, owner = _owners(np.arange(len(keys)), n, starts, piece_starts)
            if whole:  # each piece's first run: where the owner changes
                runs = runs[np.flatnonzero(np.diff(owner, prepend=-1))]
            keys = keys[runs]
        self.keys = np.unique(keys)
        slots = max(16, min(26, (len(self.keys) * _SLOTS_PER_KEY).bit_length()))
        self.shift = np.uint64(64 - slots)
        self.table = np.zeros(1 << slots, dtype=bool)
        self.table[self._slots(self.keys)] = True

    def _slots(self, hashes: np.ndarray) -> np.ndarray:
        return (hashes * _MIX) >> self.shift

    def hits(self, grams: np.ndarray) -> np.ndarray:
        """Positions in `grams` whose hash is an indexed one."""
        maybe = np.flatnonzero(self.table[self._slots(grams)])
        if not len(maybe) or not len(self.keys):
            return maybe[:0]
        found = np.searchsorted(self.keys, grams[maybe]).clip(max=len(self.keys) - 1)
        return maybe[self.keys[found] == grams[maybe]]


def candidates(buffers: Sequence[bytes], sieves: Sequence[GramSieve]) -> list[int]:
    """Indices of the `buffers` holding a run of words that one of the `sieves` indexed."""
    sieves = [sieve for sieve in sieves if len(sieve.keys)]
    if not buffers or not sieves:
        return []
    words, starts, buffer_starts = _words(buffers)
    found: set[int] = set()
    for sieve in sieves:
        # Owners are looked up for the hits only. A run across two texts (a hit only by
        # chance) is dropped: each text's own runs decide.
        hits = sieve.hits(gram_hashes(words, sieve.n))
        found.update(_owners(hits, sieve.n, starts, buffer_starts)[1].tolist())
    return sorted(found)
