"""Benchmarks: the eight MER-UniBench tasks and the embedded affective suite."""
from .datasets import (EMBEDDED_TASKS, MELD_TASKS, Example, Task, available_tasks, dataset_stats,
                       load_task)
from .label_scoring import Evaluator, balanced_accuracy, prompt_text
from .metrics import HitRate, SentimentScore, hit_rate, mean_score, sentiment_scores
from .outputs import (EMOTION_DATASETS, SENTIMENT_DATASETS, UNIBENCH_DATASETS, FolderScore,
                      load_test_labels, normalise_dataset, read_items, read_reasons, score_output,
                      score_results_folder)
from .run import weights_fingerprint
from .safe_npz import load_npz, load_npz_item
from .score_cli import add_score_parser, main_score
from .wheels import EmotionWheels, parse_labels
