"""A fake Hugging Face hub: tiny models of real architectures in a local hub cache.

Users name models by hub id (`Qwen/Qwen2.5-0.5B`); no hub is reachable here, so tests
build what a download leaves behind and point the libraries at it with HF_HUB_OFFLINE=1:

    <cache>/models--<org>--<name>/blobs/<sha256>            file contents
    <cache>/models--<org>--<name>/snapshots/<commit>/<file>  symlinks to ../../blobs/<sha256>
    <cache>/models--<org>--<name>/refs/<branch or tag>       the commit, 40 hex digits

`AutoModelForCausalLM.from_pretrained("org/name")`, `snapshot_download` and vLLM read it
as they read a real cache. The models have random weights:

- `STUDENT` (build_qwen2_base): a Qwen2-architecture model whose tokenizer is set up like
  a Qwen2.5 *base* model's: ChatML turns (`<|im_start|>`, `<|im_end|>`) in its chat
  template (the Qwen2.5 template itself, as TRL ships it), but `<|endoftext|>` as its EOS
  and pad token, in the tokenizer and in generation_config.json.
- `TEACHER` (distill.tinymodel): a Llama-architecture model with its own chat template
  (`<|assistant|>` ... `<|end|>`).

`publish` adds any checkpoint directory as a commit; the `fake_hub` fixture
(tests/conftest.py) activates a cache for one test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

STUDENT = "fakehub/qwen2-base"
TEACHER = "fakehub/llama-chat"

QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass
class FakeHub:
    """A local hub cache and the commits published in it."""

    cache: Path
    commits: dict[str, dict[str, str]] = field(default_factory=dict)  # repo -> ref -> commit

    def commit(self, repo_id: str, ref: str = "main") -> str:
        """The commit a published ref points to."""
        return self.commits[repo_id][ref]

    def snapshot(self, repo_id: str, ref: str = "main") -> Path:
        """The snapshot directory of a published ref."""
        return repo_folder(self.cache, repo_id) / "snapshots" / self.commit(repo_id, ref)

    def environ(self) -> dict[str, str]:
        """Environment variables that point a subprocess at this cache, offline."""
        return {"HF_HUB_CACHE": str(self.cache), "HF_HOME": str(self.cache.parent / "hf-home"),
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def repo_folder(cache: Path, repo_id: str) -> Path:
    """Where huggingface_hub keeps a model repository in a cache."""
    return Path(cache) / f"models--{repo_id.replace('/', '--')}"


def publish(hub: FakeHub, repo_id: str, source: Path, refs: tuple[str, ...] = ("main",)) -> str:
    """Add a checkpoint directory's files to the cache as one commit; point `refs` at it.

    The commit is a hash of the files (a fake, but 40 hex digits like git's), so the same
    files always make the same commit. Returns the commit.
    """
    folder = repo_folder(hub.cache, repo_id)
    files = sorted(p for p in Path(source).iterdir() if p.is_file())
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    listing = "".join(f"{name} {digest}\n" for name, digest in digests.items())
    commit = hashlib.sha1(f"{repo_id}\n{listing}".encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in files:
        blob = folder / "blobs" / digests[path.name]
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / path.name
        if not link.exists():
            link.symlink_to(os.path.relpath(blob, snapshot))
    for ref in refs:
        ref_file = folder / "refs" / ref
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        ref_file.write_text(commit)  # no newline, as huggingface_hub writes it
        hub.commits.setdefault(repo_id, {})[ref] = commit
    return commit


# -- the models ----------------------------------------------------------------------------

def qwen_chat_template() -> str:
    """The Qwen2.5 chat template (base and instruct ship the same one), as TRL keeps it."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text(
        encoding="utf-8")


def train_chatml_tokenizer(corpus: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer with Qwen's special tokens, set up like Qwen2.5 base."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=QWEN_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    template = qwen_chat_template()
    # the template's fixed text (the default system prompt) in the corpus keeps prompts short
    tokenizer.train_from_iterator([*corpus, template] * 2, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    wrapped.chat_template = template
    return wrapped


def build_qwen2_base(out_dir: Path, corpus: list[str], *, seed: int = 0) -> Path:
    """A randomly initialised tiny Qwen2 checkpoint with a Qwen2.5-base-like tokenizer."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = train_chatml_tokenizer(corpus)
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=endoftext, eos_token_id=endoftext)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        # At the default init (std 0.02) the tied output embeddings cap every logit near
        # +-2.5 after the final norm, and LoRA, which leaves them alone, cannot learn a
        # peaked answer. Embeddings at a trained model's scale let it.
        model.get_input_embeddings().weight.normal_(0.0, 0.1)
    # Qwen2.5-0.5B's generation_config.json: bos = eos = <|endoftext|>, greedy
    model.generation_config = GenerationConfig(bos_token_id=endoftext, eos_token_id=endoftext,
                                               do_sample=False)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    # Qwen2.5's repositories keep the template in tokenizer_config.json, where transformers 4
    # wrote it; transformers 5 writes chat_template.jinja. Lay it out as the hub has it.
    config_path = Path(out_dir) / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
    tokenizer_config["chat_template"] = tokenizer.chat_template
    config_path.write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    (Path(out_dir) / "chat_template.jinja").unlink(missing_ok=True)
    return Path(out_dir)


def build_fake_hub(root: Path, corpus: list[str]) -> FakeHub:
    """A cache under `root` holding `STUDENT` and `TEACHER` at main."""
    from distill.tinymodel import build_tiny_model

    hub = FakeHub(cache=Path(root) / "hub")
    hub.cache.mkdir(parents=True, exist_ok=True)
    publish(hub, STUDENT, build_qwen2_base(root / "build" / "student", corpus))
    # room for the longer prompts a teacher gets (its tokenizer is trained on little text)
    publish(hub, TEACHER, build_tiny_model(root / "build" / "teacher", corpus,
                                           max_positions=1024))
    return hub


def activate(monkeypatch, cache: Path) -> None:
    """Point this process (and the subprocesses it starts) at `cache`, offline.

    huggingface_hub reads its environment once, at import, so its constants are set too.
    """
    from huggingface_hub import constants

    hub = FakeHub(cache=Path(cache))
    for name, value in hub.environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
