"""Three independent witnesses of where a fine-tune acts — activation mediation (:func:`mediate`),
weight-path attribution (:func:`attribute`) and the spectrum of ΔW (:func:`spectrum`) — one table
type for all (:class:`WitnessTable`) and their agreement (:mod:`.agreement`)."""
from __future__ import annotations

from .attribution import AttributionTable, attribute
from .mediation import mediate
from .spectra import spectrum
from .table import WitnessTable

__all__ = ["AttributionTable", "WitnessTable", "attribute", "mediate", "spectrum"]
