"""The parameter and buffer names and shapes of arcface_torch's face backbones
(recognition/arcface_torch/backbones in deepinsight/insightface), written out from their
architecture, independently of leap_plugin's modules."""


def _bn(name, c):
    return [(f"{name}.weight", (c,)), (f"{name}.bias", (c,)), (f"{name}.running_mean", (c,)),
            (f"{name}.running_var", (c,)), (f"{name}.num_batches_tracked", ())]


def iresnet(layers, embedding_size=512):
    """IResNet: conv1/bn1/prelu stem, layer1..4 of IBasicBlocks (bn1, conv1, bn2, prelu,
    conv2, bn3, downsample.0/1 in each stage's first block), bn2, fc, features."""
    keys = [("conv1.weight", (64, 3, 3, 3)), *_bn("bn1", 64), ("prelu.weight", (64,))]
    cin = 64
    for stage, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
        for b in range(n):
            p = f"layer{stage}.{b}"
            keys += [*_bn(f"{p}.bn1", cin), (f"{p}.conv1.weight", (planes, cin, 3, 3)), *_bn(f"{p}.bn2", planes),
                     (f"{p}.prelu.weight", (planes,)), (f"{p}.conv2.weight", (planes, planes, 3, 3)),
                     *_bn(f"{p}.bn3", planes)]
            if b == 0:
                keys += [(f"{p}.downsample.0.weight", (planes, cin, 1, 1)), *_bn(f"{p}.downsample.1", planes)]
            cin = planes
    keys += [*_bn("bn2", 512), ("fc.weight", (embedding_size, 512 * 7 * 7)), ("fc.bias", (embedding_size,)),
             *_bn("features", embedding_size)]
    return dict(keys)


def mobilefacenet(embedding_size=512, blocks=(1, 4, 6, 2), scale=2):
    """arcface_torch's get_mbf: ConvBlock = conv/BN/PReLU as layers.0/1/2, LinearBlock =
    conv/BN, DepthWise = ConvBlock 1x1 to `groups` channels, depthwise ConvBlock,
    LinearBlock 1x1; Residual = DepthWise blocks; GDC head."""
    def conv_block(p, cin, cout, k, groups=1):
        return [(f"{p}.layers.0.weight", (cout, cin // groups, k, k)), *_bn(f"{p}.layers.1", cout),
                (f"{p}.layers.2.weight", (cout,))]

    def linear_block(p, cin, cout, k, groups=1):
        return [(f"{p}.layers.0.weight", (cout, cin // groups, k, k)), *_bn(f"{p}.layers.1", cout)]

    def depthwise(p, cin, cout, groups):
        return (conv_block(f"{p}.layers.0", cin, groups, 1) + conv_block(f"{p}.layers.1", groups, groups, 3, groups)
                + linear_block(f"{p}.layers.2", groups, cout, 1))

    def residual(p, c, n, groups):
        return [k for i in range(n) for k in depthwise(f"{p}.layers.{i}", c, c, groups)]

    c1, c2 = 64 * scale, 128 * scale
    keys = conv_block("layers.0", 3, c1, 3)
    keys += conv_block("layers.1", c1, c1, 3, 64) if blocks[0] == 1 else residual("layers.1", c1, blocks[0], 128)
    keys += depthwise("layers.2", c1, c1, 128) + residual("layers.3", c1, blocks[1], 128)
    keys += depthwise("layers.4", c1, c2, 256) + residual("layers.5", c2, blocks[2], 256)
    keys += depthwise("layers.6", c2, c2, 512) + residual("layers.7", c2, blocks[3], 256)
    keys += conv_block("conv_sep", c2, 512, 1)
    keys += linear_block("features.layers.0", 512, 512, 7, 512)
    keys += [("features.layers.2.weight", (embedding_size, 512)), *_bn("features.layers.3", embedding_size)]
    return dict(keys)


LAYOUTS = {
    "r18": lambda e: iresnet((2, 2, 2, 2), e), "r34": lambda e: iresnet((3, 4, 6, 3), e),
    "r50": lambda e: iresnet((3, 4, 14, 3), e), "r100": lambda e: iresnet((3, 13, 30, 3), e),
    "mbf": lambda e: mobilefacenet(e), "mbf_large": lambda e: mobilefacenet(e, (2, 8, 12, 4), 4),
}


def random_state_dict(network, embedding_size=512, seed=0):
    """A state dict in arcface_torch's layout with random values, as its training would save."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in LAYOUTS[network](embedding_size).items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(100)
        elif name.endswith("running_var"):
            out[name] = torch.rand(shape, generator=g) + 0.5
        elif name.endswith("features.weight"):
            out[name] = torch.ones(shape)
        else:
            out[name] = torch.randn(shape, generator=g) * 0.05
    return out


def partial_fc_v2_state_dict(num_classes, embedding_size=512, world_size=1, rank=0, seed=0):
    """What arcface_torch's ``PartialFC_V2.state_dict()`` holds on ``rank`` (its
    ``state_dict_softmax_fc``): only ``weight``, this rank's shard of the class weights,
    ``(num_local, embedding_size)`` with ``num_local = num_classes // world_size +
    int(rank < num_classes % world_size)``, initialised ``torch.normal(0, 0.01, ...)``."""
    import torch

    num_local = num_classes // world_size + int(rank < num_classes % world_size)
    g = torch.Generator().manual_seed(seed)
    return {"weight": torch.normal(0, 0.01, (num_local, embedding_size), generator=g)}


def checkpoint_gpu(backbone_state, softmax_fc_state, epoch=1, global_step=10):
    """arcface_torch's ``checkpoint_gpu_{rank}.pt`` (train_v2.py, ``save_all_states``)."""
    return {"epoch": epoch, "global_step": global_step, "state_dict_backbone": backbone_state,
            "state_dict_softmax_fc": softmax_fc_state, "state_optimizer": {}, "state_lr_scheduler": {}}
