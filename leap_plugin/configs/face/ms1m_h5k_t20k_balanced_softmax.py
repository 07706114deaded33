# <H5K, T20K>, peer long-tail method: Balanced Softmax (Ren et al., NeurIPS 2020): logits + tau * log(prior), tau = 1, on CosFace m_c = 0.35.
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "ms1m_lt_base.py"))
config = dict(base["config"], margin_list=(1.0, 0.0, 0.35), long_tail_loss=dict(method="balanced_softmax", tau=1.0),
              output="runs/face/ms1m_h5k_t20k_balanced_softmax")
