"""Interventions: value objects that say what to do at which sites (see :mod:`affectlocus.registry`).

Lower-case factories (``graft``, ``zero``, …) are the public spelling.
"""
from .activation import MeanAblate, PatchOutput, Record, ScaleOutput, ZeroOutput
from .base import Intervention, OutputIntervention, WeightIntervention
from .replay import Patch, patch
from .weight import Graft, Interpolate, NeuronMask, Noise, RandomRevert, Scale, Zero

graft = Graft
interpolate = Interpolate
zero = Zero
scale = Scale
noise = Noise
neuron_mask = NeuronMask
record = Record
zero_output = ZeroOutput
scale_output = ScaleOutput
patch_output = PatchOutput
mean_ablate = MeanAblate
random_revert = RandomRevert

__all__ = ["Graft", "Interpolate", "Intervention", "MeanAblate", "NeuronMask", "Noise", "OutputIntervention",
           "Patch", "PatchOutput", "RandomRevert", "Record", "Scale", "ScaleOutput", "WeightIntervention", "Zero", "ZeroOutput",
           "graft", "interpolate", "mean_ablate", "neuron_mask", "noise", "patch", "patch_output", "random_revert", "record", "scale",
           "scale_output", "zero", "zero_output"]
