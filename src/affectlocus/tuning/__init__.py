"""Tuning helpers: selection → peft LoRA configs, exact parameter accounting, partial adapter export.

Training itself for the study lives in :mod:`affectlocus.study.training` (``train_lora``).
"""
from .export import export_adapter
from .lora import generic_regex, lora_config, lora_module_names, target_regex, verify_targets
from .params import ParamCount, count_trainable, known_archs, meta_model, ratio_table

__all__ = ["ParamCount", "count_trainable", "export_adapter", "generic_regex", "known_archs", "lora_config",
           "lora_module_names", "meta_model", "ratio_table", "target_regex", "verify_targets"]
