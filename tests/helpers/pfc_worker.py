"""A fixed LeapPartialFC scenario run in one process or in each rank of a gloo group."""
import os

import torch

from leap_plugin.face import ElasticMarginLoss, LeapMarginLoss, LeapPartialFC, LongTailMarginLoss
from leap_plugin.face.partial_fc import shard_range

NUM_CLASSES, DIM, STEPS = 13, 8, 4
COUNTS = [4, 3, 2, 6, 2, 3, 5, 2, 4, 3, 2, 3, 4]
SPLIT = [0, 7, 12]  # rank 0 gets 7 rows, rank 1 gets 5: uneven on purpose
CASES = [(1.0, "sample", True), (0.5, "sample", True), (0.5, "logit", False),
         (1.0, "logit", True), (0.5, "logit", True),  # per-logit alpha with the cloud on
         # peer methods (LongTailMarginLoss, LEAP off): count-aware margins / offsets by global class
         (1.0, "logit", False, "balanced_softmax"), (0.5, "logit", False, "ldam"),
         (0.5, "logit", False, "adaptive_arc"),
         # random margins: GCL's per-element noise by global class, ElasticFace's per-row draws
         # (and ElasticFace+'s pairing over the whole batch's target cosines)
         (1.0, "logit", False, "gcl"), (0.5, "logit", False, "gcl"), (0.5, "logit", False, "elastic_face:arc"),
         (1.0, "logit", False, "elastic_face:cos+"), (0.5, "logit", False, "elastic_face:arc+")]


def _data():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(NUM_CLASSES, DIM, generator=g)
    batches = []
    for _ in range(STEPS):
        emb = torch.randn(SPLIT[-1], DIM, generator=g)
        labels = torch.randint(0, 4, (SPLIT[-1],), generator=g) * 3  # classes 0, 3, 6, 9
        labels[5] = -1
        batches.append((emb, labels))
    return weight, batches


def run_case(rank: int, world: int, sample_rate: float, alpha_mode: str, cloud: bool,
             peer: str = "") -> dict:
    """Train STEPS steps; return losses, gradients (global layout) and the LEAP state."""
    weight, batches = _data()
    start, num_local = shard_range(NUM_CLASSES, world, rank)
    if peer.startswith("elastic_face"):
        form = peer.split(":")[1]
        margin_list = (1.0, 0.3, 0.0) if form.startswith("arc") else (1.0, 0.0, 0.25)
        margin = ElasticMarginLoss(16.0, *margin_list, std=0.1, plus=form.endswith("+"))
        pfc = LeapPartialFC(margin, DIM, NUM_CLASSES, sample_rate, enabled=False, seed=3)
    elif peer:
        margin = LongTailMarginLoss(16.0, COUNTS, peer, (1.0, 0.0, 0.2 if peer == "balanced_softmax" else 0.0))
        pfc = LeapPartialFC(margin, DIM, NUM_CLASSES, sample_rate, enabled=False, seed=3)
    else:
        margin = LeapMarginLoss(16.0, 1.0, 0.3, 0.0)
        pfc = LeapPartialFC(margin, DIM, NUM_CLASSES, sample_rate, class_counts=COUNTS, center_lr=0.2,
                            alpha_mode=alpha_mode, seed=3)
    pfc.weight.data.copy_(weight[start:start + num_local])
    pfc.cloud_active = cloud
    lo, hi = (SPLIT[rank], SPLIT[rank + 1]) if world > 1 else (0, SPLIT[-1])
    out = {"loss": [], "emb_grad": [], "weight_grad": [], "clouded": []}
    for emb, labels in batches:
        local = emb[lo:hi].clone().requires_grad_()
        loss = pfc(local, labels[lo:hi])
        loss.backward()
        grad = torch.zeros(NUM_CLASSES, DIM)
        grad[start:start + num_local] = pfc.weight.grad
        out["loss"].append(loss.item())
        # DDP would average the backbone gradient over ranks: undo the world-size factor.
        out["emb_grad"].append(local.grad / world)
        out["weight_grad"].append(grad)
        out["clouded"].append(pfc.summary().get("leap/clouded_classes", 0.0))
        with torch.no_grad():
            pfc.weight -= 0.5 * pfc.weight.grad
        pfc.weight.grad = None
    # this rank's shard of the LEAP state (per-class buffers of its classes, its part of the memory)
    out["state"] = {k: v for k, v in pfc.state_dict().items() if k.startswith("memory.") or k == "step"}
    return out


def worker(rank: int, world: int, out_dir: str) -> None:
    results = [run_case(rank, world, *case) for case in CASES]
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
