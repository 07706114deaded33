# <H5K, T20K>, LEAP-AV: ArcFace + the vanilla feature cloud (Eq. 6, 8), head = more than 20 images.
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "ms1m_lt_base.py"))
config = dict(base["config"], margin_list=(1.0, 0.5, 0.0), output="runs/face/ms1m_h5k_t20k_leap_av",
              leap=dict(base["LEAP"], version="vanilla"))
