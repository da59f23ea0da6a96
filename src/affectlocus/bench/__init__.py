"""Benchmarks: the eight MER-UniBench tasks and the embedded affective suite."""
from .datasets import (EMBEDDED_TASKS, MELD_TASKS, Example, Task, available_tasks, dataset_stats,
                       load_task)
from .metrics import HitRate, SentimentScore, hit_rate, mean_score, sentiment_scores
from .outputs import (EMOTION_DATASETS, SENTIMENT_DATASETS, UNIBENCH_DATASETS, FolderScore,
                      load_test_labels, normalise_dataset, read_items, read_reasons, score_output,
                      score_results_folder)
from .safe_npz import load_npz, load_npz_item
from .score_cli import add_score_parser, main_score
from .wheels import EmotionWheels, parse_labels
from .judges import LexiconJudge, LLMJudge, map_to_label
from .predict import LabelScorer, LabelScores, generate_answers, reference_logprobs
from .prompts import PROMPT_VERSION, PromptStyle, build_label_prompts, char_tokenizer, generation_prompts
from .runner import (ResultCache, Scores, TaskScore, chance_level, classification_metrics, evaluate,
                     model_fingerprint, run_task)
from .subtitles import UniBenchSources, run_unibench
