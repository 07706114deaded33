"""Version breakages that change what training does, without an error."""
from __future__ import annotations

import functools
import types

from ._registry import patch

__all__ = ["patch_optimizer_zero_grad", "patch_yacs_int_for_float"]


@patch("optimizer_zero_grad")
def patch_optimizer_zero_grad() -> None:
    """The silent one (any torch >= 2.0). ``build_optimizer`` wraps parameters in
    ``ContiguousParams``: the optimizer holds flat buffers whose ``.grad`` the model's
    parameters share as views. Since torch 2.0 ``zero_grad()`` defaults to
    ``set_to_none=True``, which drops that flat grad: the optimizer then updates nothing
    while the model's grads accumulate. Make the optimizers fastreid builds zero their
    grads in place."""
    import fastreid.engine.defaults as defaults
    import fastreid.solver as solver
    import fastreid.solver.build as solver_build

    original = solver_build.build_optimizer

    @functools.wraps(original)
    def build_optimizer(cfg, model, contiguous=True):
        optimizer, param_wrapper = original(cfg, model, contiguous=contiguous)
        zero_grad = type(optimizer).zero_grad

        def zero_grad_in_place(self, set_to_none: bool = False) -> None:
            zero_grad(self, set_to_none=set_to_none)

        optimizer.zero_grad = types.MethodType(zero_grad_in_place, optimizer)
        return optimizer, param_wrapper

    for module in (solver_build, solver, defaults):
        module.build_optimizer = build_optimizer


@patch("yacs_int_for_float")
def patch_yacs_int_for_float() -> None:
    """yacs (every version up to 0.1.8) refuses ``CENTER_LR 1`` for a float key ("Type
    mismatch ... float vs. int"): an integer given for a float key is taken as that float."""
    import yacs.config

    original = yacs.config._check_and_coerce_cfg_value_type

    @functools.wraps(original)
    def check_and_coerce(replacement, original_value, key, full_key):
        if type(original_value) is float and type(replacement) is int:
            return float(replacement)
        return original(replacement, original_value, key, full_key)

    yacs.config._check_and_coerce_cfg_value_type = check_and_coerce
