# <H5K, T20K>, CosFace baseline (Eq. 1), s=64, m_c=0.35.
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "ms1m_lt_base.py"))
config = dict(base["config"], margin_list=(1.0, 0.0, 0.35), output="runs/face/ms1m_h5k_t20k_cosface")
