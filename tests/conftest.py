import os

# Tests run on CPU whatever the machine has, with few threads: CI has 2 cores.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

import sys  # noqa: E402

# Spawned worker processes import their target functions by module name:
# make the helpers in this folder importable there (spawn copies sys.path).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
