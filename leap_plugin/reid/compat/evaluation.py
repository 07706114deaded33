"""fastreid's evaluator exits the process when its Cython ranking cannot be built."""
from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys

from ._registry import patch

__all__ = ["build_fast_ranking", "patch_ranking_build"]

logger = logging.getLogger("fastreid." + __name__)


def build_fast_ranking() -> bool:
    """Build fastreid's Cython ranking in place with this interpreter. Returns success."""
    import fastreid.evaluation.rank_cylib as cylib

    folder = os.path.dirname(os.path.abspath(cylib.__file__))
    try:
        ret = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=folder,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    except OSError as e:
        logger.warning("could not build fastreid's Cython ranking (%s); using the Python ranking", e)
        return False
    if ret.returncode != 0:
        logger.warning("could not build fastreid's Cython ranking; using the Python ranking:\n%s",
                       ret.stdout[-2000:])
        return False
    return True


@patch("ranking_build")
def patch_ranking_build() -> None:
    """``ReidEvaluator.__init__`` runs ``make`` in site-packages when the Cython ranking is
    missing and ``sys.exit(1)``s when that fails (no compiler, read-only site-packages).
    Try the build once; on failure fastreid's own Python ranking is used."""
    import fastreid.evaluation.reid_evaluation as reid_evaluation

    reid_evaluation.compile_helper = functools.lru_cache(maxsize=None)(build_fast_ranking)
