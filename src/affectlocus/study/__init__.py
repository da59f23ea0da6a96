"""Study: the paper's experiments end to end (tune → health → locate → inherit → targeted → ablate →
interpolate → cost → neurons → unibench), cached per step, with a report and claim verdicts."""
from .claims import Label, Verdict
from .config import INHERIT_SETS, STEPS, ConfigError, StudyConfig, full, quick
from .pipeline import Study, judge
from .results import ScoreRow, TaskRow

__all__ = ["INHERIT_SETS", "STEPS", "ConfigError", "Label", "ScoreRow", "Study", "StudyConfig", "TaskRow",
           "Verdict", "full", "judge", "quick"]
