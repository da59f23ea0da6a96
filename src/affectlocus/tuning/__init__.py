"""Tuning: selections → peft LoRA configs, exact trainable-parameter accounting on the meta device,
training of only the selected sites (LoRA, or full fine-tuning of the selected weights) with atomic
checkpoints and exact resume, sweeps over module sets × seeds, and partial adapter export."""
from ..errors import CheckpointError, ResumeError, TuningError
from .data import (SFTDataset, arithmetic_control, build_dataset, collate, encode_pair, load_pairs,
                   save_pairs)
from .export import check_adapter, export_adapter
from .lora import generic_regex, lora_config, lora_module_names, target_regex, verify_targets
from .params import ParamCount, count_trainable, known_archs, meta_model, ratio_table
from .sweep import DEFAULT_SETS, heldout_loss, sweep
from .trainer import TrainConfig, TrainResult, train

__all__ = ["CheckpointError", "DEFAULT_SETS", "ParamCount", "ResumeError", "SFTDataset", "TrainConfig",
           "TrainResult", "TuningError", "arithmetic_control", "build_dataset", "check_adapter", "collate",
           "count_trainable", "encode_pair", "export_adapter", "generic_regex", "heldout_loss", "known_archs",
           "load_pairs", "lora_config", "lora_module_names", "meta_model", "ratio_table", "save_pairs",
           "sweep", "target_regex", "train", "verify_targets"]
