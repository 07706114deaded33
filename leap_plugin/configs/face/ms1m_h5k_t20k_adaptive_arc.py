# <H5K, T20K>, peer long-tail method: ArcFace with frequency-adaptive margins a * K_i^(-lambda) + b (Ha et al., 2020).
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "ms1m_lt_base.py"))
config = dict(base["config"], margin_list=(1.0, 0.0, 0.0), long_tail_loss=dict(method="adaptive_arc", a=0.5, lam=0.25, b=0.05),
              output="runs/face/ms1m_h5k_t20k_adaptive_arc")
