# <H5K, T20K>, LEAP-CF: CosFace + the full feature cloud (Eq. 7, 9), no head/tail threshold.
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "ms1m_lt_base.py"))
config = dict(base["config"], margin_list=(1.0, 0.0, 0.35), output="runs/face/ms1m_h5k_t20k_leap_cf",
              leap=dict(base["LEAP"], version="full"))
