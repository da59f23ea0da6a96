"""Study: the paper's experiments end to end (tune → locate → inherit → targeted → ablate →
interpolate → cost → neurons), cached per step, with a report and claim verdicts."""
from .claims import Verdict
from .config import INHERIT_SETS, STEPS, ConfigError, StudyConfig, full, quick
from .pipeline import Study, judge

__all__ = ["INHERIT_SETS", "STEPS", "ConfigError", "Study", "StudyConfig", "Verdict", "full", "judge", "quick"]
