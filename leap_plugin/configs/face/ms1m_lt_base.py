# The paper's face setting (Liu et al., CVPR 2020, Sec. 4.1 and 4.3) for leap-face-train.
# A long-tailed MS-Celeb-1M: the top `head` identities whole, the next `tail_classes` with
# `tail_samples` images each; ResNet-18, 112x112 aligned crops, 512-d embeddings, 30 epochs,
# class centers updated every 5 iterations. The paper trains with a triangular (cyclical) LR
# and starts the cloud at the third cycle; here the schedule is arcface_torch's polynomial
# decay and the cloud starts at epoch 20 (the third of three 10-epoch thirds).
# Set `rec` (one sub-folder per identity) and the verification sets, e.g.
#   leap-face-train configs/face/ms1m_h5k_t20k_leap_cv.py rec=/data/ms1m/images output=runs/x
config = dict(
    network="r18",
    embedding_size=512,
    scale=64.0,
    sample_rate=1.0,
    batch_size=128,            # per rank
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    num_epoch=30,
    warmup_epoch=1,
    verbose=2000,
    frequent=50,
    num_workers=4,
    rec="/data/ms1m-retinaface/images",
    val_targets=["/data/ms1m-retinaface/lfw.bin", "/data/ms1m-retinaface/cfp_fp.bin",
                 "/data/ms1m-retinaface/agedb_30.bin"],
    output="runs/face",
    long_tail=dict(head=5000, tail_classes=20000, tail_samples=5, seed=0),
    leap=dict(enabled=False),
)

# The paper's LEAP settings for face data; the variants pick the version.
LEAP = dict(enabled=True, tail_threshold=20, center_lr=0.1, center_update_period=5, stats_period=5,
            memory_factor=1, start_epoch=20, alpha_mode="logit")
