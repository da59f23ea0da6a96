"""What a model is asked, without torch: the embedded affective tasks and MELD with fixed seeded
splits, the prompts every evaluator and trainer renders, and classification metrics with chance levels."""
from .classification import chance_level, classification_metrics, percentile_ci
from .datasets import EMBEDDED_TASKS, MELD_TASKS, Example, Task, available_tasks, dataset_stats, load_task
from .prompts import (PROMPT_VERSION, PromptStyle, build_label_prompts, char_tokenizer, generation_prompts,
                      label_training_pairs)

__all__ = ["EMBEDDED_TASKS", "MELD_TASKS", "PROMPT_VERSION", "Example", "PromptStyle", "Task", "available_tasks",
           "build_label_prompts", "chance_level", "char_tokenizer", "classification_metrics", "dataset_stats",
           "generation_prompts", "label_training_pairs", "load_task", "percentile_ci"]
