"""The fastreid 1.4.0 patches: imports, the silent optimizer break, CPU paths."""
import importlib
import pkgutil

import pytest
import torch

import leap_plugin  # noqa: F401
from leap_plugin.reid import compat

# Build scripts shipped inside fastreid's package, not modules.
SCRIPTS = {"fastreid.evaluation.rank_cylib.setup", "fastreid.evaluation.rank_cylib.test_cython"}


def test_every_fastreid_submodule_imports_after_leap_plugin():
    import fastreid

    names = [m.name for m in pkgutil.walk_packages(fastreid.__path__, "fastreid.") if m.name not in SCRIPTS]
    assert len(names) > 80
    for name in names:
        importlib.import_module(name)


def test_patches_are_idempotent():
    import fastreid.solver.build as solver_build

    before = solver_build.build_optimizer
    compat.apply()
    compat.apply()
    assert solver_build.build_optimizer is before
    assert len(compat.APPLIED) >= 6


def _tiny_model_and_cfg():
    from fastreid.config import get_cfg
    from fastreid.modeling import build_model

    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    cfg.MODEL.BACKBONE.FEAT_DIM = 512
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    cfg.MODEL.HEADS.CLS_LAYER = "CosSoftmax"
    cfg.MODEL.HEADS.SCALE, cfg.MODEL.HEADS.MARGIN = 24, 0.2
    torch.manual_seed(0)
    return build_model(cfg), cfg


def _one_step(optimizer, model):
    from fastreid.utils.events import EventStorage

    batch = {"images": torch.rand(4, 3, 64, 32) * 255, "targets": torch.tensor([0, 1, 2, 3])}
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    with EventStorage(0):
        for _ in range(2):
            loss = sum(model({k: v.clone() for k, v in batch.items()}).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {k: not torch.equal(before[k], v) for k, v in model.named_parameters()}


def test_stock_optimizer_silently_does_not_train_and_the_patch_fixes_it():
    import fastreid.solver.build as solver_build

    model, cfg = _tiny_model_and_cfg()
    stock_optimizer, _ = solver_build.build_optimizer.__wrapped__(cfg, model)
    changed = _one_step(stock_optimizer, model)
    assert not any(changed.values()), "stock fastreid 1.4.0 + torch 2 was expected to update nothing"

    model, cfg = _tiny_model_and_cfg()
    optimizer, _ = solver_build.build_optimizer(cfg, model)
    changed = _one_step(optimizer, model)
    assert changed["heads.weight"] and changed["backbone.conv1.weight"]


def test_atomic_checkpoint_keeps_last_good_file_on_crash(tmp_path):
    from fastreid.utils.checkpoint import Checkpointer

    model = torch.nn.Linear(2, 2)
    ckpt = Checkpointer(model, str(tmp_path))
    ckpt.save("model_final")
    good = (tmp_path / "model_final.pth").read_bytes()

    class Boom:
        def state_dict(self):
            raise KeyboardInterrupt  # a crash while the checkpoint is being assembled

    ckpt.checkpointables["boom"] = Boom()
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_final")
    assert (tmp_path / "model_final.pth").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_final.pth"]


def test_corrupt_checkpoint_and_image_are_named(tmp_path):
    from fastreid.data.data_utils import read_image
    from fastreid.utils.checkpoint import Checkpointer

    bad = tmp_path / "model.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="model.pth"):
        Checkpointer(torch.nn.Linear(2, 2)).load(str(bad))
    img = tmp_path / "0001_c1s1_000001_01.jpg"
    img.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(RuntimeError, match="0001_c1s1_000001_01.jpg"):
        read_image(str(img))


def test_cpu_dataloader_iterates_without_cuda():
    from fastreid.data.data_utils import DataLoaderX

    loader = DataLoaderX(0, dataset=[{"x": torch.tensor([i])} for i in range(5)], batch_size=2)
    assert [b["x"].tolist() for b in loader] == [[[0], [1]], [[2], [3]], [[4]]]


def test_metric_printer_survives_two_writes_at_one_iteration():
    from fastreid.utils.events import CommonMetricPrinter, EventStorage

    with EventStorage(0) as storage:
        storage.epoch = 0  # set by fastreid's trainer before each epoch
        storage.put_scalar("total_loss", 1.0)
        printer = CommonMetricPrinter(max_iter=10)
        printer.write()
        printer.write()  # fastreid 1.4.0: ZeroDivisionError (no "time" history yet)
