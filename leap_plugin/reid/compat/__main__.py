"""Set-up step (``python -m leap_plugin.reid.compat``): build fastreid's Cython ranking when
a compiler is there; without one, evaluation falls back to fastreid's Python ranking, so
this never fails."""
import logging

from . import apply
from .evaluation import build_fast_ranking

logging.basicConfig(level=logging.INFO)
apply()
print("fastreid Cython ranking:", "built" if build_fast_ranking() else "not built, Python ranking used")
