"""Running the command-line tools as a user does: in a subprocess, with a timeout."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300  # a hang fails the test instead of the suite


def leap_train(root, *args, cwd=None, pythonpath=ROOT, datasets=None):
    """``leap-train ARGS`` in ``cwd`` (default ``root``) on the data under ``datasets``
    (default ``root/datasets``), one thread, no GPU; stdout and stderr together."""
    env = dict(os.environ, FASTREID_DATASETS=str(datasets or os.path.join(root, "datasets")),
               CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONPATH=pythonpath)
    return subprocess.run([sys.executable, "-m", "leap_plugin.cli.train", *args], cwd=cwd or root, env=env,
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT)


def last_line(run) -> str:
    return run.stdout.strip().splitlines()[-1]
