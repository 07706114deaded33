#!/usr/bin/env bash
# The CUDA checks, for a machine with a GPU (never in CI): the CUDA path of both adapters
# with AMP / fp16, then the two cost benchmarks on the GPU. Each step prints its figures.
#   bash benchmarks/gpu_check.sh [python]      (default: .venv/bin/python, else python3)
# Needs the project installed (make install) and torch with CUDA; writes under $OUT
# (default: outputs/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== device"
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print(torch.cuda.get_device_name(0), "torch", torch.__version__, "CUDA", torch.version.cuda)
PY

echo "== fastreid adapter on CUDA with AMP (SOLVER.AMP.ENABLED True): 2 epochs, LEAP on from epoch 1"
"$PY" - "$OUT" <<'PY'
import json, os, subprocess, sys
sys.path.insert(0, "tests")
import market_data
out = sys.argv[1]
market_data.write_market1501(os.path.join(out, "datasets"))
cfg = market_data.tiny_config(os.path.join(out, "amp.yml"), os.path.join(out, "amp"), epochs=2, start_epoch=1,
                              eval_period=2)
env = dict(os.environ, FASTREID_DATASETS=os.path.join(out, "datasets"))
run = subprocess.run([sys.executable, "-m", "leap_plugin.cli.train", "--config-file", cfg, "MODEL.DEVICE", "cuda",
                      "SOLVER.AMP.ENABLED", "True"], env=env, text=True, capture_output=True)
print(run.stdout[-1500:], run.stderr[-1500:])
assert run.returncode == 0, "AMP training failed"
metrics = [json.loads(l) for l in open(os.path.join(out, "amp", "metrics.json"))]
print("clouded classes at the end:", [m.get("leap/clouded_classes") for m in metrics if "leap/clouded_classes" in m][-1])
PY

echo "== insightface adapter on CUDA with fp16 (fp16=True), LEAP-CV, fused perturbation"
"$PY" - "$OUT" <<'PY'
import os, sys
sys.path.insert(0, "tests")
from face import face_helpers as fh
from leap_plugin.cli import face_train
out = sys.argv[1]
fh.make_face_folder(os.path.join(out, "faces"), [8] * 6 + [2] * 6)
fh.make_pairs_bin(os.path.join(out, "pairs.bin"))
path = os.path.join(out, "face.py")
fh.write_config(path, margin_list=(1.0, 0.0, 0.35), scale=32.0, network="mbf", embedding_size=128, batch_size=16,
                lr=0.05, num_epoch=2, frequent=2, num_workers=2, seed=0, fp16=True, rec=os.path.join(out, "faces"),
                output=os.path.join(out, "face"), val_targets=[os.path.join(out, "pairs.bin")],
                leap=dict(enabled=True, version="vanilla", start_epoch=1, tail_threshold=4))
os.environ["LEAP_PLUGIN_FUSED"] = "1"
assert face_train.main([path, "--overwrite"]) == 0
print(open(os.path.join(out, "face", "training.log")).read()[-1500:])
PY

echo "== benchmarks on the GPU"
"$PY" benchmarks/head_overhead.py --device cuda --steps 30 --warmup 5 --output "$OUT"
cat "$OUT/head_overhead_cuda.md"
echo "(benchmarks/partial_fc.py runs on the CPU only; its GPU figures are not part of this check)"
