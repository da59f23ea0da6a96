"""Study configuration: one dataclass, read from TOML, whose fields document their limits."""
from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import ConfigError, SiteError
from ..sites import CANONICAL, GROUPS, parse_layers, parse_modules
from ..sites.selection import ModuleSpec

STEPS = ("tune", "health", "locate", "attribute", "inherit", "targeted", "ablate", "interpolate", "cost",
         "neurons", "unibench")

#: The study's Table 1 grafts (plus every single module): attention alone and with MLP modules.
INHERIT_SETS = ("none", "attn", "attn+down", "attn+up", "attn+gate", "attn+up+down", "attn+gate+down",
                "attn+gate+up", "q", "k", "v", "o", "gate", "up", "down", "all")


#: The quick demo's subset of the grafts (the single modules claim 2 compares, and attention as a block).
QUICK_INHERIT = ("none", "gate", "up", "down", "all")
#: The quick demo's reverted modules (claim 5 compares gate with each).
QUICK_ABLATE = ("gate", "up", "down")
#: The quick demo's short instruction (the prompt's shared prefix is paid at every training step).
QUICK_INSTRUCTION = "Answer with one word: {labels}."
METRICS = ("balanced_accuracy", "accuracy", "weighted_f1", "macro_f1")


@dataclass
class StudyConfig:
    """Everything a study run depends on. Results are cached per step under ``out``."""

    model: str = "smollm2-135m"             # alias, HF folder, .safetensors or .gguf
    out: str = "runs/demo"                  # run folder (everything is written inside it)
    dtype: str | None = None                # None keeps the checkpoint's; "bfloat16" on GPU
    device: str | None = None               # None → CPU
    device_map: str | None = None           # e.g. "auto" to spread a 7B model over GPUs (accelerate)
    train_tasks: list[str] = field(default_factory=lambda: ["rt-polarity", "tweets-sentiment"])
    eval_tasks: list[str] = field(default_factory=lambda: ["rt-polarity", "tweets-sentiment"])
    meld_dir: str | None = None             # needed only for meld-* tasks
    metric: str = "balanced_accuracy"       # balanced_accuracy (chance 1/K), accuracy, weighted_f1, macro_f1
    shots: int = 0                          # few-shot examples per label in the prompt (training and scoring alike)
    instruction: str | None = None          # the prompt's instruction; None: the evaluator's built-in one
    n_train: int = 256                      # training examples per affective task (≥ 8)
    balance_train: bool = True              # draw training examples round-robin over labels
    max_train_chars: int | None = None      # skip longer training texts (tokens cost time); None: keep all
    n_eval: int = 64                        # test examples per evaluation task (≥ 16; label-stratified)
    n_control: int = 256                    # arithmetic control examples
    steps: int = 40                         # optimiser steps per LoRA run (≥ 1)
    batch_size: int = 8
    lr: float = 1e-3
    warmup: float = 0.1                     # fraction of steps with linear warm-up
    rank: int = 8                           # LoRA r (same for every module set: "uniform rank")
    alpha: float = 16.0
    max_length: int = 96                    # tokens per training example (prompt + answer)
    bf16: bool | None = None                # bf16 autocast (training and scoring). None: where bf16 kernels are
                                            # native (a bf16 GPU, an AVX-512/AMX CPU), fp32 elsewhere; the run
                                            # resolves it once and records the choice in config.json
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # all-module and GET adapters (≥ 3 for verdicts)
    aux_seeds: int = 1                      # the first N seeds also train the control and other single modules
    targeted: list[str] = field(default_factory=lambda: ["up"])   # besides gate and all
    inherit_sets: list[str] = field(default_factory=lambda: list(QUICK_INHERIT))
    ablate_modules: list[str] = field(default_factory=lambda: list(QUICK_ABLATE))
    ablate_kinds: list[str] = field(default_factory=lambda: ["revert"])  # revert, zero, noise
    random_controls: int = 1                # random parameter-matched reverts per seed
    swap_control: bool = True               # necessity: also replace gate's update by the control's
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    neuron_k: list[int] = field(default_factory=lambda: [64])
    probe_layers: list[int] = field(default_factory=lambda: [0, 7, 15, 22, 29])
    # The `attribute` step (where, three ways: ΔW size, mediation, attribution; the spectrum of ΔW). Cost on
    # CPU ≈ 2 forwards per witnessed site (7 modules × layers) per seed; the defaults are the quick demo's.
    witness_examples: int = 3               # test prompts in the witnesses' batch (≥ 1; spread over the tasks)
    witness_layers: str | list[int] | None = "::15"  # layers witnessed, a layer spec ("::15": every 15th,
                                            # "0,5", [0, 5]; ":" or None: every layer). Also the spectrum's
    attribute_steps: int = 2                # midpoint steps of the attribution integral (≥ 1; 8 keeps it ≤ 5 %)
    witness_seeds: int = 3                  # the first N main seeds' all-module adapters are witnessed (≥ 1)
    spectrum_exact: bool = False            # exact SVDs of W and W + ΔW (angles, intruders) where min(shape)
                                            # ≤ 1024 (≈ 20× the cost on CPU); False: seeded randomized SVD
    bootstrap: int = 2000                   # bootstrap draws for confidence intervals
    eval_batch_size: int = 16
    skip: list[str] = field(default_factory=list)   # steps to skip (names from STEPS)
    # MER-UniBench from your subtitle CSVs + label files (affectlocus.evaluation.subtitles); unset: step skipped.
    unibench: str | None = None             # sources TOML/JSON or folder (relative to the config file)
    unibench_datasets: list[str] = field(default_factory=list)   # empty: every dataset with subtitles
    unibench_mode: str = "label"            # "label" (likeliest label) or "generate" (answer + lexicon judge)
    unibench_max: int | None = None         # examples per dataset (seeded sample); None: all
    unibench_sets: list[str] = field(default_factory=lambda: ["none", "attn", "attn+gate", "gate", "all"])

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value outside its documented limits."""
        limits = {"n_train": 8, "n_eval": 16, "steps": 1, "batch_size": 1, "rank": 1, "max_length": 16,
                  "bootstrap": 0, "eval_batch_size": 1, "n_control": 8, "witness_examples": 1,
                  "attribute_steps": 1, "witness_seeds": 1}
        for name, low in limits.items():
            if int(getattr(self, name)) < low:
                raise ConfigError(f"{name} = {getattr(self, name)} is below its minimum {low}")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct, got {self.seeds}")
        if not 1 <= self.aux_seeds:
            raise ConfigError(f"aux_seeds = {self.aux_seeds} is below its minimum 1")
        if self.metric not in METRICS:
            raise ConfigError(f"unknown metric {self.metric!r}; use one of {', '.join(METRICS)}")
        if self.shots < 0 or (self.max_train_chars is not None and self.max_train_chars < 8):
            raise ConfigError(f"need shots ≥ 0 and max_train_chars ≥ 8 (or None), got {self.shots}, "
                              f"{self.max_train_chars}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.witness_layers is not None:
            try:
                parse_layers(self.witness_layers, 4096)
            except SiteError as exc:
                raise ConfigError(f"witness_layers: {exc}") from None
        bad_mods = [m for m in self.ablate_modules if m not in CANONICAL]
        if bad_mods:
            raise ConfigError(f"unknown ablate modules {bad_mods}; use {', '.join(CANONICAL)}")
        unknown = [s for s in self.skip if s not in STEPS]
        if unknown:
            raise ConfigError(f"unknown steps to skip {unknown}; steps are {', '.join(STEPS)}")
        bad = [k for k in self.ablate_kinds if k not in ("revert", "zero", "noise")]
        if bad:
            raise ConfigError(f"unknown ablate kinds {bad}; use revert, zero, noise")
        if self.unibench_mode not in ("label", "generate"):
            raise ConfigError(f"unibench_mode must be 'label' or 'generate', got {self.unibench_mode!r}")
        if self.unibench_max is not None and self.unibench_max < 1:
            raise ConfigError(f"unibench_max = {self.unibench_max} is below its minimum 1")
        if self.unibench_datasets:
            from ..unibench.outputs import normalise_dataset
            from ..errors import DataError
            try:
                self.unibench_datasets = [normalise_dataset(n) for n in self.unibench_datasets]
            except DataError as exc:
                raise ConfigError(f"unibench_datasets: {exc}") from None
        for spec in [*self.targeted, *(s for s in [*self.inherit_sets, *self.unibench_sets] if s != "none")]:
            parse_modules(spec)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> "StudyConfig":
        """Read a TOML file (a ``[study]`` table or top-level keys); ``overrides`` that are not None win."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"study config not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        data = data.get("study", data)
        if data.get("unibench") and not Path(data["unibench"]).is_absolute():
            data["unibench"] = str(path.parent / data["unibench"])
        return cls.from_dict({**data, **{k: v for k, v in overrides.items() if v is not None}}, str(path))

    @classmethod
    def from_dict(cls, data: dict, origin: str = "config") -> "StudyConfig":
        """A configuration from its fields (unknown keys are an error naming ``origin``)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{origin}: unknown fields {unknown}; known: {', '.join(sorted(names))}")
        return cls(**data)

    def to_dict(self) -> dict:
        """Every field (``config.json`` and the fingerprints)."""
        return asdict(self)

    def fingerprint(self, *keys: str) -> str:
        """A short hash of the named fields (all when none): a step's results depend on these."""
        data = self.to_dict()
        picked = {k: data[k] for k in (keys or sorted(data)) if k not in ("out", "skip")}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:12]


def set_key(modules: ModuleSpec) -> str:
    """Canonical name of a module set ("all", "attn", or e.g. "q+gate"): names adapters and rows."""
    mods = parse_modules(modules)
    return "all" if mods == CANONICAL else "attn" if mods == GROUPS["attn"] else "+".join(mods)


def quick() -> StudyConfig:
    """The demo configuration: the embedded model and suite on 2 CPU cores (docs/demo-recipe.md)."""
    return StudyConfig(instruction=QUICK_INSTRUCTION, max_train_chars=110)


def full(out: str = "runs/demo-full") -> StudyConfig:
    """``--full``: more steps, examples, seeds and the whole single-module grid (hours on CPU)."""
    return StudyConfig(out=out, n_train=1024, n_eval=300, steps=150, seeds=[0, 1, 2], aux_seeds=3,
                       max_train_chars=None,
                       targeted=["q", "k", "v", "o", "up", "down", "attn", "mlp", "attn+gate", "attn+up",
                                 "attn+down", "gate+up", "gate+down", "up+down"],
                       inherit_sets=list(INHERIT_SETS), ablate_modules=list(CANONICAL),
                       ablate_kinds=["revert", "zero", "noise"],
                       random_controls=5, alphas=[0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5],
                       neuron_k=[8, 32, 128, 512], witness_examples=32, witness_layers=None,
                       attribute_steps=8, spectrum_exact=True)
