"""Running models on tasks: the one evaluator (:func:`evaluate`, exact label likelihoods or generation
+ judge, cached and resumable), its scorers and judges, MER-UniBench from subtitles, and mixed task
lists (:mod:`.suite`). ``affectlocus bench`` is :mod:`.cli`."""
from .judges import LexiconJudge, LLMJudge, map_to_label
from .predict import LabelScorer, LabelScores, generate_answers, reference_logprobs
from .runner import ResultCache, Scores, TaskScore, evaluate, run_task
from .subtitles import UniBenchSources, run_unibench
from .suite import evaluate_tasks, save_results

__all__ = ["LLMJudge", "LabelScorer", "LabelScores", "LexiconJudge", "ResultCache", "Scores", "TaskScore",
           "UniBenchSources", "evaluate", "evaluate_tasks", "generate_answers", "map_to_label", "reference_logprobs",
           "run_task", "run_unibench", "save_results"]
