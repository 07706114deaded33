"""A tiny data set on disk in Market-1501's real layout and file naming."""
import os

import numpy as np
from PIL import Image


def write_market1501(root: str, num_ids: int = 8, train_per_id=(12, 10, 8, 4, 4, 3, 3, 2),
                     test_ids: int = 4, size=(64, 32), seed: int = 0) -> str:
    """``root/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/0001_c1s1_000151_01.jpg``.

    Each identity is a fixed colour pattern plus noise, so a network can learn it; camera
    ids cycle through c1..c6. Returns the datasets root to give fastreid.
    """
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "Market-1501-v15.09.15")
    h, w = size

    def save(folder, pid, cam, k, pattern):
        os.makedirs(os.path.join(base, folder), exist_ok=True)
        img = np.clip(pattern + rng.normal(0, 25, pattern.shape), 0, 255).astype(np.uint8)
        name = f"{pid:04d}_c{cam}s1_{k:06d}_01.jpg"
        Image.fromarray(img).save(os.path.join(base, folder, name), quality=95)

    def pattern():
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        img = np.empty((h, w, 3))
        img[: h // 2], img[h // 2:] = top, bottom
        return img

    for i in range(num_ids):
        p = pattern()
        for k in range(train_per_id[i % len(train_per_id)]):
            save("bounding_box_train", i + 1, k % 6 + 1, k, p)
    for i in range(test_ids):
        p, pid = pattern(), 500 + i
        save("query", pid, 1, 0, p)
        for k in range(3):
            save("bounding_box_test", pid, 2 + k, k + 1, p)
    save("bounding_box_test", 0, 3, 99, pattern())  # a background (junk) gallery image
    return root


TINY_CONFIG = """
MODEL:
  META_ARCHITECTURE: Baseline
  DEVICE: cpu
  BACKBONE:
    NAME: build_resnet_backbone
    DEPTH: 18x
    LAST_STRIDE: 1
    FEAT_DIM: 512
    PRETRAIN: False
  HEADS:
    NAME: {head}
    WITH_BNNECK: True
    NECK_FEAT: after
    POOL_LAYER: GlobalAvgPool
    CLS_LAYER: {layer}
    SCALE: 24
    MARGIN: 0.2
    LEAP:
      ENABLED: {leap}
      START_EPOCH: {start_epoch}
  LOSSES:
    NAME: ("CrossEntropyLoss",)
INPUT:
  SIZE_TRAIN: [64, 32]
  SIZE_TEST: [64, 32]
DATALOADER:
  SAMPLER_TRAIN: NaiveIdentitySampler
  NUM_INSTANCE: 4
  NUM_WORKERS: 0
SOLVER:
  OPT: Adam
  BASE_LR: 0.001
  IMS_PER_BATCH: 16
  MAX_EPOCH: {epochs}
  SCHED: MultiStepLR
  STEPS: [100]
  WARMUP_ITERS: 0
  CHECKPOINT_PERIOD: 1
TEST:
  EVAL_PERIOD: {eval_period}
  IMS_PER_BATCH: 16
DATASETS:
  NAMES: ("Market1501",)
  TESTS: ("Market1501",)
OUTPUT_DIR: {output}
"""


def tiny_config(path: str, output: str, leap: bool = True, epochs: int = 2, start_epoch: int = 0,
                eval_period: int = 100, layer: str = "LeapCosSoftmax") -> str:
    with open(path, "w") as f:
        f.write(TINY_CONFIG.format(head="LeapHead" if leap else "EmbeddingHead",
                                   layer=layer if leap else layer.replace("Leap", ""), leap=leap,
                                   start_epoch=start_epoch, epochs=epochs, eval_period=eval_period,
                                   output=output))
    return path
