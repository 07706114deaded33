"""LEAP (Learnable Embedding Augmentation, Liu et al., CVPR 2020) for fastreid and insightface.

Importing this package patches fastreid 1.4.0 for Python 3.11 / torch 2.x / CPU-only
machines (:mod:`leap_plugin.reid.compat`), registers the LEAP head, classification
layers, samplers, datasets and config keys into fastreid's registries, and extends
fastreid's own ``DefaultTrainer`` and ``default_setup`` (:mod:`leap_plugin.reid.engine`):
import it before any ``fastreid.engine`` / ``fastreid.data`` / ``fastreid.evaluation``. The toolbox-free
math lives in :mod:`leap_plugin.core`; the insightface adapter in :mod:`leap_plugin.face`
(imported on demand, it does not need fastreid).
"""
__version__ = "0.1.0"

try:
    import fastreid  # noqa: F401
except ImportError:  # a face-only install: the core and the insightface adapter still work
    _HAS_FASTREID = False
else:
    _HAS_FASTREID = True

if _HAS_FASTREID:
    from .reid import compat as _compat

    _compat.apply()
    from .reid import register as _register

    _register()
    from .reid.config import add_leap_config  # noqa: E402
    from .reid.engine import LeapTrainer  # noqa: E402

    __all__ = ["add_leap_config", "LeapTrainer", "__version__"]
else:
    __all__ = ["__version__"]
