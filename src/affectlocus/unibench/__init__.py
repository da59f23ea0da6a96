"""MER-UniBench scoring without torch: read AffectGPT output and label files safely and score them
exactly as the reference does (five-wheel hit rate, weighted F1). ``affectlocus bench score`` is
:mod:`.cli`."""
from .metrics import HitRate, SentimentScore, hit_rate, mean_score, sentiment_scores
from .outputs import (EMOTION_DATASETS, SENTIMENT_DATASETS, UNIBENCH_DATASETS, FolderScore, load_test_labels,
                      normalise_dataset, read_items, read_reasons, score_output, score_results_folder)
from .safe_npz import load_npz, load_npz_item
from .wheels import PACKAGED_WHEELS, EmotionWheels, parse_labels

__all__ = ["EMOTION_DATASETS", "PACKAGED_WHEELS", "SENTIMENT_DATASETS", "UNIBENCH_DATASETS", "EmotionWheels", "FolderScore", "HitRate",
           "SentimentScore", "hit_rate", "load_npz", "load_npz_item", "load_test_labels", "mean_score",
           "normalise_dataset", "parse_labels", "read_items", "read_reasons", "score_output", "score_results_folder",
           "sentiment_scores"]
