#!/usr/bin/env bash
# Each install extra, alone in a fresh virtual environment, does its job (CI runs this after make lint):
#   runtime  -> reconstruct the bundled sample video with the bundled ONNX model, torch absent
#   triton   -> the runtime plus tritonclient, still without torch: --model triton://... reaches the
#               client library and fails on the closed port with its own message (the real server runs
#               in make test: tests/runtime/test_triton_backend.py)
#   mapping  -> the runtime plus pycolmap, still without torch: the COLMAP model of that reconstruction
#   geo      -> the runtime plus pyproj: the sample in metres from a GPS track, written in UTM (--crs)
#   export   -> export tiny VGGT to ONNX through the parity gate
# Versions come from constraints.txt, as in CI's test environment; torch from scripts/install_torch.sh
# (TORCH=cpu by default, TORCH=cuda).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pip_quiet() { grep -v "is ignored: it is neither" || true; }

echo "check-extras: [runtime] in a fresh venv"
"$python" -m venv "$work/runtime"
"$work/runtime/bin/python" -m pip install -q --disable-pip-version-check -c "$root/constraints.txt" "$root[runtime]" 2>&1 | pip_quiet
"$work/runtime/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
  || { echo "check-extras: [runtime] pulled in torch"; exit 1; }
(cd "$work" && HF_HUB_OFFLINE=1 "$work/runtime/bin/edgescene" reconstruct \
  "$root/edgescene/assets/sample/sample.mp4" --out "$work/reconstruction" --max-frames 12 --window 4 >/dev/null)
test -s "$work/reconstruction/points.ply" && test -s "$work/reconstruction/report.json"
echo "check-extras: [runtime] reconstructed the sample video"

echo "check-extras: [geo] added to the [runtime] venv"
"$work/runtime/bin/python" -m pip install -q --disable-pip-version-check -c "$root/constraints.txt" "$root[geo]" 2>&1 | pip_quiet
"$work/runtime/bin/python" - "$root/edgescene/assets/sample/sample_gt.npz" "$work/track.csv" <<'PY'
import sys

import numpy as np
import pymap3d

gt = np.load(sys.argv[1])
rotation, translation = gt["extrinsics"][:, :, :3], gt["extrinsics"][:, :, 3]
centres = -np.einsum("nji,nj->ni", rotation, translation)  # the sample's true cameras (y down): east x, north z, up -y
lat, lon, alt = pymap3d.enu2geodetic(centres[:, 0], centres[:, 2], -centres[:, 1], 46.5197, 6.6323, 372.0)
rows = [f"{i / 10:.2f},{a:.9f},{b:.9f},{h:.3f}" for i, (a, b, h) in enumerate(zip(lat, lon, alt))]
open(sys.argv[2], "w").write("time,lat,lon,alt\n" + "\n".join(rows) + "\n")
PY
(cd "$work" && HF_HUB_OFFLINE=1 "$work/runtime/bin/edgescene" reconstruct "$root/edgescene/assets/sample/sample.mp4" \
  --out "$work/geo" --max-frames 12 --window 4 --scale-from "gps:$work/track.csv" --crs EPSG:32632 >/dev/null)
test -s "$work/geo/points_crs.ply" && grep -q '"enu_origin"' "$work/geo/report.json"
echo "check-extras: [geo] the sample in metres from a GPS track, its cloud in UTM 32N"

echo "check-extras: [triton] added to the [runtime] venv"
"$work/runtime/bin/python" -m pip install -q --disable-pip-version-check -c "$root/constraints.txt" "$root[triton]" 2>&1 | pip_quiet
"$work/runtime/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
  || { echo "check-extras: [triton] pulled in torch"; exit 1; }
port="$("$work/runtime/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")"
if (cd "$work" && "$work/runtime/bin/edgescene" reconstruct "$root/edgescene/assets/sample/sample.mp4" \
    --model "triton://127.0.0.1:$port/vggt?protocol=grpc" --out "$work/remote" >"$work/triton.log" 2>&1); then
  echo "check-extras: [triton] reconstructed with no server?"; exit 1
fi
grep -q "no Triton server answers GRPC at 127.0.0.1:$port" "$work/triton.log" \
  || { echo "check-extras: [triton] unexpected failure:"; cat "$work/triton.log"; exit 1; }
echo "check-extras: [triton] the gRPC client is installed and names the missing server"

echo "check-extras: [mapping] added to the [runtime] venv"
"$work/runtime/bin/python" -m pip install -q --disable-pip-version-check -c "$root/constraints.txt" "$root[mapping]" 2>&1 | pip_quiet
"$work/runtime/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
  || { echo "check-extras: [mapping] pulled in torch"; exit 1; }
(cd "$work" && "$work/runtime/bin/edgescene" colmap "$work/reconstruction" >"$work/colmap.log" 2>&1) \
  || { echo "check-extras: [mapping] colmap failed:"; cat "$work/colmap.log"; exit 1; }
test -s "$work/reconstruction/colmap/sparse/0/points3D.bin" && test -s "$work/reconstruction/colmap/images/00000.jpg"
echo "check-extras: [mapping] wrote the COLMAP model of that reconstruction"

echo "check-extras: [export] in a fresh venv"
"$python" -m venv "$work/export"
bash "$root/scripts/install_torch.sh" "$work/export/bin/python" 2>&1 | pip_quiet
"$work/export/bin/python" -m pip install -q --disable-pip-version-check -c "$root/constraints.txt" "$root[export]" 2>&1 | pip_quiet
(cd "$work" && HF_HUB_OFFLINE=1 "$work/export/bin/edgescene" export --model vggt_tiny --random-weights \
  --format onnx --height 56 --width 84 --frames-range 1:2:2 --out "$work/tiny_onnx" >/dev/null)
test -s "$work/tiny_onnx/model.onnx" && grep -q '"accepted": true' "$work/tiny_onnx/artifact.json"
echo "check-extras: [export] exported tiny VGGT through the parity gate"
