"""Sites: *where* — canonical projections × layers, resolved on any supported architecture."""
from .architectures import CANONICAL, LAYOUTS, DecoderStack, Layout, find_decoder
from .selection import GROUPS, Selection, Site, parse_layers, parse_modules, resolve_module, select

__all__ = ["CANONICAL", "GROUPS", "LAYOUTS", "DecoderStack", "Layout", "Selection", "Site",
           "find_decoder", "parse_layers", "parse_modules", "resolve_module", "select"]
