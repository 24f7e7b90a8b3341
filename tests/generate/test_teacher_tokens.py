"""The teacher-tokens file: records round-trip exactly, bytes are deterministic, damage is
a ValueError that names the file, and a missing record is named rather than a KeyError."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from distill.teacher_tokens import TeacherTokens, load_teacher_tokens, save_teacher_tokens


def record(rng: np.random.Generator, length: int, k: int = 4) -> TeacherTokens:
    return TeacherTokens(rng.integers(0, 50_000, length).astype(np.int32),
                         rng.integers(0, 50_000, (length, k)).astype(np.int32),
                         (-rng.exponential(2.0, (length, k))).astype(np.float32))


def records(seed: int = 0) -> dict[str, TeacherTokens]:
    rng = np.random.default_rng(seed)
    # an empty completion, a unicode id, ids that are prefixes of one another
    return {"a": record(rng, 7), "ab": record(rng, 0), "réponse-3": record(rng, 31),
            "a#1": record(rng, 1)}


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_keeps_every_record_exactly_and_in_order(tmp_path):
    original = records()
    original["a"].top_logprobs[0, 0] = -np.inf  # a token the model rules out
    path = save_teacher_tokens(tmp_path / "t.safetensors", original)
    loaded = load_teacher_tokens(path)
    assert list(loaded) == list(original)
    for key, tokens in original.items():
        assert loaded[key] == tokens
        assert loaded[key].k == 4 and len(loaded[key]) == len(tokens)
    assert load_teacher_tokens(path, ["réponse-3", "a"]) == {
        "réponse-3": original["réponse-3"], "a": original["a"]}
    assert load_teacher_tokens(save_teacher_tokens(tmp_path / "none.safetensors", {})) == {}


def test_same_records_same_bytes_in_another_process(tmp_path):
    first = save_teacher_tokens(tmp_path / "first.safetensors", records())
    script = ("import sys; sys.path.insert(0, sys.argv[2]); from test_teacher_tokens import "
              "records; from distill.teacher_tokens import save_teacher_tokens; "
              "save_teacher_tokens(sys.argv[1], records())")
    second = tmp_path / "second.safetensors"
    subprocess.run([sys.executable, "-c", script, str(second), str(__file__).rsplit("/", 1)[0]],
                   check=True)
    assert digest(first) == digest(second)
    # and the bytes follow the content: one changed log-probability changes the file
    changed = records()
    changed["a"].top_logprobs[3, 2] += 1e-3
    assert digest(save_teacher_tokens(tmp_path / "changed.safetensors", changed)) != digest(first)


def test_a_missing_record_is_named(tmp_path):
    path = save_teacher_tokens(tmp_path / "t.safetensors", records())
    with pytest.raises(ValueError, match=r"1 record\(s\): \['gone'\]"):
        load_teacher_tokens(path, ["a", "gone"])


def damage_truncate(data: bytes) -> bytes:
    return data[:len(data) - 9]


def damage_header(data: bytes) -> bytes:
    return data[:8] + b"{not json" + data[17:]


def damage_offsets(data: bytes) -> bytes:
    # rewrite the file with offsets that run past the tokens
    from safetensors.numpy import load, save

    arrays = load(data)
    arrays["offsets"][-1] += 5
    return save(arrays, metadata={"format": "distill.teacher_tokens/1"})


def damage_format(data: bytes) -> bytes:
    from safetensors.numpy import load, save

    return save(load(data), metadata={"format": "something else"})


@pytest.mark.parametrize("damage", [damage_truncate, damage_header, damage_offsets,
                                    damage_format])
def test_a_damaged_file_is_a_value_error_naming_it(tmp_path, damage):
    path = save_teacher_tokens(tmp_path / "t.safetensors", records())
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=str(path)):
        load_teacher_tokens(path)


def test_shapes_and_k_are_checked_when_written(tmp_path):
    rng = np.random.default_rng(0)
    good = record(rng, 3)
    with pytest.raises(ValueError, match="top_logprobs must be a 2-d float32"):
        TeacherTokens(good.token_ids, good.top_ids, good.top_logprobs.astype(np.float64))
    with pytest.raises(ValueError, match="3 tokens but top-k rows for 2"):
        TeacherTokens(good.token_ids, good.top_ids[:2], good.top_logprobs[:2])
    with pytest.raises(ValueError, match="different k"):
        save_teacher_tokens(tmp_path / "t.safetensors", {"a": good, "b": record(rng, 3, k=5)})
    assert not (tmp_path / "t.safetensors").exists()
