"""The fastreid adapter: everything that knows fastreid lives here.

- :mod:`.compat`: the patches fastreid 1.4.0 needs on Python 3.11 / torch 2 / CPU;
- :mod:`.keys`: every config key, declared once; :mod:`.config`: adding, validating and
  loading them;
- :mod:`.contracts`: the methods the trainer looks for on any module (``typing.Protocol``);
- :mod:`.layers`, :mod:`.head`, :mod:`.hooks`, :mod:`.sampler`, :mod:`.datasets`,
  :mod:`.peers`: what is registered into fastreid's registries;
- :mod:`.engine`, :mod:`.checkpoint`: fastreid's own trainer, setup and checkpointer, extended;
- :mod:`.pretrained`: offline ImageNet weights for fastreid's MobileNetV2.
"""
import functools
import logging

from .compat._registry import patch

__all__ = ["register"]


class _ToFastreidLog(logging.Handler):
    """Messages of the toolbox-free core (logger ``leap_plugin``, which does not propagate)
    reach fastreid's log (console and log.txt) where fastreid's logger is set up, else the
    root logger's handlers (a face-only or plain script): each message once."""

    def emit(self, record: logging.LogRecord) -> None:
        fastreid = logging.getLogger("fastreid")
        if fastreid.handlers:
            logging.getLogger("fastreid.leap_plugin").handle(record)
        else:
            logging.getLogger().handle(record)


@patch("build_heads_configure")
def _extend_build_heads() -> None:
    """fastreid builds a classification layer as ``cls(num_classes, scale, margin)``; after
    ``build_heads`` each layer's ``configure(cfg)`` reads the rest from the config."""
    import fastreid.modeling.heads as heads
    import fastreid.modeling.heads.build as heads_build
    import fastreid.modeling.meta_arch.baseline as baseline

    # Imported here, not at the top: this package's modules import fastreid.data /
    # .modeling, which only import after the compatibility patches (leap_plugin/__init__).
    from .layers import configure_layers

    original = heads_build.build_heads

    @functools.wraps(original)
    def build_heads(cfg):
        head = original(cfg)
        configure_layers(head, cfg)
        return head

    for module in (heads_build, heads, baseline):
        module.build_heads = build_heads


def register() -> None:
    """Register LEAP's parts into fastreid's registries, defaults, trainer and checkpointer
    (idempotent). The extensions of fastreid's own classes and functions run through the
    same once-per-process mechanism as the compatibility patches (:mod:`.compat`), and are
    listed with them in ``docs/fastreid-compat.md``."""
    from fastreid.config import defaults

    # Imported here, not at the top: they import fastreid.data / .engine / .modeling, which
    # only import once the compatibility patches are applied (leap_plugin/__init__ does that
    # first, then calls this).
    from . import datasets, head, layers, peers, sampler  # noqa: F401  (registration on import)
    from .checkpoint import extend_checkpointer
    from .config import add_leap_config
    from .engine import extend_fastreid

    add_leap_config(defaults._C)
    _extend_build_heads()
    extend_fastreid()
    extend_checkpointer()
    core_log = logging.getLogger("leap_plugin")
    if not any(isinstance(h, _ToFastreidLog) for h in core_log.handlers):
        core_log.addHandler(_ToFastreidLog())
        core_log.setLevel(logging.INFO)
        core_log.propagate = False
