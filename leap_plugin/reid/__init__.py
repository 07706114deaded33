"""The fastreid adapter: everything that knows fastreid lives here."""


def register() -> None:
    """Register LEAP's parts into fastreid's registries and defaults (idempotent)."""
    from . import datasets, head, layers, peers, sampler  # noqa: F401  (registration on import)
    from .config import add_leap_config
    from fastreid.config import defaults

    add_leap_config(defaults._C)
