import os

# Tests run on CPU whatever the machine has, with few threads: CI has 2 cores.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))
