"""insightface / arcface_torch adapter of LEAP (toolbox-free: needs neither mxnet nor fastreid).

- :class:`LeapMarginLoss`: arcface_torch's ``CombinedMarginLoss`` contract + the feature cloud (Eq. 7-8)
- :class:`LongTailMarginLoss`: the same contract with the peer long-tail methods (LDAM,
  Balanced Softmax / logit adjustment, frequency-adaptive ArcFace margins, Gaussian Clouded Logit)
- :class:`ElasticMarginLoss`: the same contract with ElasticFace's random per-sample margins
- :class:`LeapPartialFC`: arcface_torch's ``PartialFC_V2`` contract + class centers and angle
  memory over the all-gathered batch (Eq. 3-6, 9)
- :mod:`.verification`: ``.bin`` verification sets, 10-fold accuracy, TPR@FPR, rank-1 identification
- :mod:`.backbones`: IResNet face backbones (112x112 -> 512-d), looked up by name
- :mod:`.data`, :mod:`.config`, :mod:`.checkpoint`: the image-folder data, config files and
  checkpoints of ``leap-face-train`` (:mod:`leap_plugin.cli.face_train`)
"""
from .elastic import ElasticMarginLoss
from .longtail import LONG_TAIL_METHODS, LongTailMarginLoss, peer_margin_loss
from .margin import LeapMarginLoss
from .partial_fc import LeapPartialFC

__all__ = ["LeapMarginLoss", "LongTailMarginLoss", "ElasticMarginLoss", "LONG_TAIL_METHODS", "LeapPartialFC",
           "peer_margin_loss"]
