"""A teacher's completions as tokens with their top-k log-probabilities, and their file.

Logit distillation (`train.method: kd`) needs, for every token the teacher generated, the
teacher's k most likely tokens at that position and their log-probabilities. The
generation pass already computes them (vLLM's `logprobs=k`, the hf backend's raw
logits), so they are kept from it rather than recomputed by a second teacher pass.

They do not go into JSONL (k floats and k ids per token would make the records 50 times
larger and slow to parse): `save_teacher_tokens` writes one safetensors file of
concatenated arrays, records found through offsets, ids in order in two more arrays.
100k records of 500 tokens at k = 20 are 50M positions, 8 bytes per entry: 8 GB, read by
`load_teacher_tokens` with one copy per array (no parsing per token).

File layout (format "distill.teacher_tokens/1", named in the metadata):

    token_ids      int32   [N]       every record's completion tokens, concatenated
    top_ids        int32   [N, k]    the k most likely tokens at each position
    top_logprobs   float32 [N, k]    their log-probabilities
    offsets        int64   [R + 1]   record r owns positions offsets[r]:offsets[r + 1]
    id_bytes       uint8   [B]       the record ids, UTF-8, concatenated
    id_offsets     int64   [R + 1]   record r's id is id_bytes[id_offsets[r]:id_offsets[r + 1]]

The ids are arrays rather than metadata so that a million ids do not strain the
safetensors header (capped at 100 MB), and the metadata has one key so that its bytes
never depend on a hash map's order: the same records in the same order always give the
same file, byte for byte (a resumed generation is compared with an uninterrupted one).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy

from distill.records import PARTIAL_SUFFIX

FORMAT = "distill.teacher_tokens/1"
_TENSORS = {"token_ids": "int32", "top_ids": "int32", "top_logprobs": "float32",
            "offsets": "int64", "id_bytes": "uint8", "id_offsets": "int64"}


@dataclass(frozen=True, eq=False)
class TeacherTokens:
    """A teacher's completion as tokens, with its top-k log-probabilities at each one."""

    # [T] int32: the sampled completion tokens, as generated (an end-of-sequence token
    # included when the model emitted one; a stop string's tokens too, though the text
    # stops before it)
    token_ids: numpy.ndarray
    # [T, k] int32: the k most likely tokens at each position, most likely first
    top_ids: numpy.ndarray
    # [T, k] float32: their log-probabilities under the raw (temperature 1, unpenalised)
    # distribution
    top_logprobs: numpy.ndarray

    def __post_init__(self) -> None:
        problem = _shape_problem(self.token_ids, self.top_ids, self.top_logprobs)
        if problem:
            raise ValueError(f"TeacherTokens: {problem}")

    @property
    def k(self) -> int:
        """How many tokens each position keeps."""
        return int(self.top_ids.shape[1])

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])

    def __eq__(self, other: object) -> bool:
        """Equal tokens, top ids and log-probabilities, dtypes included.

        (Dataclass equality would compare the arrays element-wise and fail on the truth
        value of the result.)
        """
        if not isinstance(other, TeacherTokens):
            return NotImplemented
        return all(numpy.array_equal(a, b) and a.dtype == b.dtype for a, b in (
            (self.token_ids, other.token_ids), (self.top_ids, other.top_ids),
            (self.top_logprobs, other.top_logprobs)))

    __hash__ = None  # type: ignore[assignment]  # arrays are mutable


def _shape_problem(token_ids: Any, top_ids: Any, top_logprobs: Any) -> str | None:
    """What is wrong with one record's arrays, or None."""
    for name, array, dtype, ndim in (("token_ids", token_ids, "int32", 1),
                                     ("top_ids", top_ids, "int32", 2),
                                     ("top_logprobs", top_logprobs, "float32", 2)):
        if not isinstance(array, numpy.ndarray) or array.dtype != dtype or array.ndim != ndim:
            found = (f"{array.dtype} {array.shape}" if isinstance(array, numpy.ndarray)
                     else type(array).__name__)
            return f"{name} must be a {ndim}-d {dtype} array, not {found}"
    if top_ids.shape != top_logprobs.shape:
        return f"top_ids {top_ids.shape} and top_logprobs {top_logprobs.shape} differ in shape"
    if top_ids.shape[0] != token_ids.shape[0]:
        return (f"{token_ids.shape[0]} tokens but top-k rows for {top_ids.shape[0]} "
                "positions")
    return None


def save_teacher_tokens(path: str | Path, tokens: Mapping[str, TeacherTokens]) -> Path:
    """Write `tokens` (record id -> tokens, in the mapping's order) to `path`, atomically.

    The same mapping, in the same order, gives the same bytes.

    Raises:
        ValueError: the records keep different k.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    ks = {t.k for t in tokens.values()}
    if len(ks) > 1:
        raise ValueError(f"{path}: records keep different k {sorted(ks)}; one file holds one k")
    k = ks.pop() if ks else 0
    records = list(tokens.values())
    lengths = numpy.array([0] + [len(t) for t in records], dtype=numpy.int64)
    ids = [key.encode("utf-8") for key in tokens]
    id_lengths = numpy.array([0] + [len(i) for i in ids], dtype=numpy.int64)
    arrays = {
        "token_ids": _concat([t.token_ids for t in records], (0,), numpy.int32),
        "top_ids": _concat([t.top_ids for t in records], (0, k), numpy.int32),
        "top_logprobs": _concat([t.top_logprobs for t in records], (0, k), numpy.float32),
        "offsets": numpy.cumsum(lengths),
        "id_bytes": numpy.frombuffer(b"".join(ids), dtype=numpy.uint8).copy(),
        "id_offsets": numpy.cumsum(id_lengths),
    }
    # save_file streams each array to disk: no second copy of the file in memory
    _atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata={"format": FORMAT}))
    return path


def load_teacher_tokens(path: str | Path, ids: Iterable[str] | None = None
                        ) -> dict[str, TeacherTokens]:
    """Read a file written by `save_teacher_tokens`: every record, or those of `ids`.

    With `ids` None the records are views into the file's three arrays (read once); with
    `ids`, copies, so the rest of the file is not kept in memory.

    Raises:
        FileNotFoundError: there is no file at `path`.
        ValueError: the file is damaged or not this format (naming `path`), or `ids`
            names records it does not hold (naming them).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no teacher tokens at {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            names = set(handle.keys())
            if metadata.get("format") != FORMAT or names != set(_TENSORS):
                raise ValueError(f"{path} is not a {FORMAT} file (metadata {metadata}, "
                                 f"tensors {sorted(names)})")
            arrays = {name: handle.get_tensor(name) for name in _TENSORS}
    except SafetensorError as error:
        raise ValueError(f"{path} is damaged: {error}") from None
    record_ids = _check_file(path, arrays)
    offsets = arrays["offsets"]
    where = {record_id: r for r, record_id in enumerate(record_ids)}
    if ids is None:
        wanted, copy = record_ids, False
    else:
        wanted, copy = list(ids), True
        missing = [i for i in wanted if i not in where]
        if missing:
            raise ValueError(f"{path} holds no teacher tokens for {len(missing)} record(s): "
                             f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
    out: dict[str, TeacherTokens] = {}
    for record_id in wanted:
        r = where[record_id]
        span = slice(int(offsets[r]), int(offsets[r + 1]))
        parts = [arrays[name][span] for name in ("token_ids", "top_ids", "top_logprobs")]
        out[record_id] = TeacherTokens(*(p.copy() if copy else p for p in parts))
    return out


def _check_file(path: Path, arrays: dict[str, numpy.ndarray]) -> list[str]:
    """The record ids of a read file; ValueError naming `path` when it does not add up."""

    def damaged(problem: str) -> ValueError:
        return ValueError(f"{path} is damaged: {problem}")

    for name, dtype in _TENSORS.items():
        if arrays[name].dtype != dtype:
            raise damaged(f"{name} is {arrays[name].dtype}, not {dtype}")
    problem = _shape_problem(arrays["token_ids"], arrays["top_ids"], arrays["top_logprobs"])
    if problem:
        raise damaged(problem)
    for offsets, name, total in ((arrays["offsets"], "offsets", len(arrays["token_ids"])),
                                 (arrays["id_offsets"], "id_offsets", len(arrays["id_bytes"]))):
        if (offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0
                or offsets[-1] != total or (numpy.diff(offsets) < 0).any()):
            raise damaged(f"{name} do not cut {total} entries into records")
    if len(arrays["offsets"]) != len(arrays["id_offsets"]):
        raise damaged(f"{len(arrays['offsets']) - 1} records but "
                      f"{len(arrays['id_offsets']) - 1} ids")
    raw = arrays["id_bytes"].tobytes()
    bounds = arrays["id_offsets"].tolist()
    try:
        ids = [raw[a:b].decode("utf-8") for a, b in zip(bounds, bounds[1:], strict=False)]
    except UnicodeDecodeError as error:
        raise damaged(f"record ids are not UTF-8 ({error})") from None
    if len(set(ids)) != len(ids):
        raise damaged("a record id appears twice")
    return ids


def _concat(parts: list[numpy.ndarray], empty: tuple[int, ...], dtype: type) -> numpy.ndarray:
    """One contiguous array of `parts` (of shape `empty` when there are none)."""
    if not parts:
        return numpy.zeros(empty, dtype=dtype)
    return numpy.ascontiguousarray(numpy.concatenate(parts), dtype=dtype)


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp)` and rename `tmp` to `path`: readers see the old file or the new.

    The temporary file is named like `records.atomic_write_text`'s, so
    `remove_partial_writes` clears one that a kill left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
