"""Small synthetic face data, a tiny registered backbone and a training worker for the tests."""
import os

import numpy as np
from PIL import Image

from leap_plugin.face.backbones import BACKBONES, IResNet, register_backbone
from leap_plugin.face.verification import write_bin

if "tiny" not in BACKBONES:
    @register_backbone("tiny")
    def tiny(embedding_size: int = 512, dropout: float = 0.0, input_size: int = 112) -> IResNet:
        """An IResNet small enough for CPU tests (same structure as r18, 1 block per stage)."""
        return IResNet((1, 1, 1, 1), embedding_size, dropout, widths=(8, 8, 16, 16, 32), input_size=input_size)


def identity_images(identity: int, count: int, size: int = 112) -> list:
    """``count`` noisy versions of one random smooth pattern: an identity's photos."""
    rng = np.random.default_rng(identity)
    base = rng.uniform(0, 255, (8, 8, 3))
    base = np.kron(base, np.ones((size // 8, size // 8, 1)))
    out = []
    for _ in range(count):
        image = base + rng.normal(0, 20, base.shape) + rng.uniform(-30, 30)
        out.append(np.clip(image, 0, 255).astype(np.uint8))
    return out


def make_face_folder(root: str, counts: list) -> None:
    """``root/id<i>/<j>.png`` with ``counts[i]`` images of identity i."""
    for i, n in enumerate(counts):
        folder = os.path.join(root, f"id{i:03d}")
        os.makedirs(folder, exist_ok=True)
        for j, image in enumerate(identity_images(i, n)):
            Image.fromarray(image).save(os.path.join(folder, f"{j}.png"))


def make_pairs_bin(path: str, pairs: int = 12) -> None:
    """A verification .bin: alternating genuine / impostor pairs of unseen identities."""
    images, issame = [], []
    for p in range(pairs):
        a = identity_images(100 + p, 2)
        same = p % 2 == 0
        images += [a[0], a[1] if same else identity_images(200 + p, 1)[0]]
        issame.append(same)
    write_bin(path, images, issame)


def write_config(path: str, **keys) -> None:
    with open(path, "w") as f:
        f.write("config = dict(\n")
        for key, value in keys.items():
            f.write(f"    {key}={value!r},\n")
        f.write(")\n")


def train_worker(rank: int, world: int, config_path: str) -> None:
    """Run ``leap-face-train`` as rank ``rank`` of an initialised gloo group."""
    from leap_plugin.cli.face_train import train
    from leap_plugin.face.config import load_config

    train(load_config(config_path), world, rank)
