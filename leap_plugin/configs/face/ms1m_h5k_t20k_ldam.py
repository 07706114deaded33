# <H5K, T20K>, peer long-tail method: LDAM (Cao et al., NeurIPS 2019): cosine margins C / K_i^(1/4), the rarest class at max_m = 0.5.
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "ms1m_lt_base.py"))
config = dict(base["config"], margin_list=(1.0, 0.0, 0.0), long_tail_loss=dict(method="ldam", max_m=0.5),
              output="runs/face/ms1m_h5k_t20k_ldam")
