"""Which attention implementations keep a padding-free row's examples apart, per example.

A padding-free batch (TRL's `padding_free`, and `packing` with strategy bfd) is one row of
several examples whose position ids restart at each example, with no attention mask. The
loss of each example in that row must equal its loss alone. Shown here, per example, on the
tiny Llama (transformers 5.19):

- eager, sdpa and flex_attention: equal. transformers builds a per-example causal mask from
  the position ids (`masking_utils.find_packed_sequence_indices`) when there is no attention
  mask and no cache, which is how TRL's SFTTrainer calls the model (`use_cache=False`).
- sdpa with a cache (a forward with `use_cache=True`, as the checkpoint's config says):
  different. The mask is then a plain causal one over the row, so examples see the ones
  before them. TRL never trains that way; distill's check relies on it.
- an attention kernel registered only as a kernel (transformers builds no mask for it, the
  kernel is causal over the whole row): different. distill refuses padding-free training
  under an attention implementation it does not know (`check_examples_apart`).

Flash attention (varlen through the position ids or TRL's cu_seq_lens) cannot run on a CPU;
it is the kernel TRL and transformers design padding-free training for.
"""

from __future__ import annotations

import pytest

from distill.train.config import check_examples_apart

LENGTHS = (23, 7, 41, 12)  # varied, so that later examples have earlier ones to leak from


def example_losses(model, sequences, *, packed: bool, use_cache: bool = False) -> list[float]:
    """Mean next-token cross-entropy of each sequence, packed into one row or one by one."""
    import torch
    import torch.nn.functional as F

    def losses_of(logits, ids):
        return float(F.cross_entropy(logits[:-1].float(), ids[1:]))

    with torch.no_grad():
        if not packed:
            return [losses_of(model(input_ids=ids[None], use_cache=False).logits[0], ids)
                    for ids in sequences]
        row = torch.cat(sequences)[None]
        positions = torch.cat([torch.arange(len(ids)) for ids in sequences])[None]
        logits = model(input_ids=row, position_ids=positions, use_cache=use_cache).logits[0]
    losses, start = [], 0
    for ids in sequences:
        losses.append(losses_of(logits[start:start + len(ids)], ids))
        start += len(ids)
    return losses


@pytest.fixture(scope="module")
def sequences(tiny_model_dir):
    import torch
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(tiny_model_dir).vocab_size
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab, (n,), generator=generator) for n in LENGTHS]


def load(model_dir, attention: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attention)
    return model.eval()


@pytest.mark.parametrize("attention", ["eager", "sdpa", "flex_attention"])
def test_padding_free_row_is_exact_per_example(tiny_model_dir, sequences, attention):
    model = load(tiny_model_dir, attention)
    alone = example_losses(model, sequences, packed=False)
    packed = example_losses(model, sequences, packed=True)
    assert packed == pytest.approx(alone, abs=1e-4)
    # the examples differ from one another, so equality is not a constant
    assert max(alone) - min(alone) > 1e-3
    check_examples_apart({"packing": True,
                          "model_init_kwargs": {"attn_implementation": attention}})


def test_sdpa_with_a_cache_mixes_the_examples(tiny_model_dir, sequences):
    model = load(tiny_model_dir, "sdpa")
    alone = example_losses(model, sequences, packed=False)
    cached = example_losses(model, sequences, packed=True, use_cache=True)
    # the first example has nothing before it; every later one attends to the earlier ones
    assert cached[0] == pytest.approx(alone[0], abs=1e-4)
    assert all(abs(c - a) > 1e-3 for c, a in zip(cached[1:], alone[1:], strict=True))


def test_a_kernel_transformers_builds_no_mask_for_mixes_them_and_is_refused(
        tiny_model_dir, sequences):
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    AttentionInterface.register("distill_test_kernel", sdpa_attention_forward)
    model = load(tiny_model_dir, "distill_test_kernel")
    alone = example_losses(model, sequences, packed=False)
    packed = example_losses(model, sequences, packed=True)
    assert all(abs(p - a) > 1e-3 for p, a in zip(packed[1:], alone[1:], strict=True))
    with pytest.raises(ValueError, match="not known to keep them apart"):
        check_examples_apart({"packing": True, "model_init_kwargs": {
            "attn_implementation": "distill_test_kernel"}})
