"""detpre's config: its keys (:mod:`.defaults`) and the one loader every tool uses (:mod:`.loader`)."""

from .defaults import add_detpre_config
from .errors import ConfigError
from .loader import ResolvedConfig, load_cfg, resolve_cfg

__all__ = ["ConfigError", "ResolvedConfig", "add_detpre_config", "load_cfg", "resolve_cfg"]
