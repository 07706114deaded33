# <H5K, T20K>, ArcFace baseline (Eq. 2), s=64, m_a=0.5.
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "ms1m_lt_base.py"))
config = dict(base["config"], margin_list=(1.0, 0.5, 0.0), output="runs/face/ms1m_h5k_t20k_arcface")
