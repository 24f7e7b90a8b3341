"""Build small Llama-architecture checkpoints locally: no model hub involved.

Tests, the quickstart and the microworld all need models that load from disk like any
hub checkpoint (`AutoModelForCausalLM.from_pretrained(dir)`, vLLM's `LLM(dir)`), with a
tokenizer trained here with `tokenizers` and a chat template. Head size 64 is the
default because vLLM's CPU attention kernels reject smaller heads.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# A ChatML-like template. `{% generation %}` marks assistant tokens so TRL can mask the
# loss to the assistant's turns (`assistant_only_loss=True`).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

SPECIAL_TOKENS = [
    "<|pad|>", "<|bos|>", "<|end|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>",
]


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512):
    """Train a byte-level BPE tokenizer on `corpus` and wrap it for transformers.

    Byte-level pre-tokenisation means any text encodes, even characters the corpus lacked.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def llama_config(vocab_size: int, *, hidden_size: int = 128, layers: int = 2,
                 heads: int = 2, intermediate_size: int | None = None,
                 max_positions: int = 512, tokenizer=None):
    """A small `LlamaConfig`; `hidden_size / heads` is the head size (keep it 64 for vLLM)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id if tokenizer is not None else None,
        eos_token_id=tokenizer.eos_token_id if tokenizer is not None else None,
        pad_token_id=tokenizer.pad_token_id if tokenizer is not None else None,
    )


def build_tiny_model(out_dir: str | Path, corpus: Iterable[str], *, seed: int = 0,
                     vocab_size: int = 512, hidden_size: int = 128, layers: int = 2,
                     heads: int = 2, max_positions: int = 512) -> Path:
    """Write a randomly initialised Llama checkpoint with a locally trained tokenizer.

    Returns the directory, which loads with `from_pretrained` and with vLLM.
    """
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(corpus, vocab_size=vocab_size)
    config = llama_config(len(tokenizer), hidden_size=hidden_size, layers=layers, heads=heads,
                          max_positions=max_positions, tokenizer=tokenizer)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
