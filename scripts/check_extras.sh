#!/usr/bin/env bash
# Each install extra, alone in a fresh virtual environment, does its job (CI runs this after make lint):
#   runtime  -> reconstruct the bundled sample video with the bundled ONNX model, torch absent
#   export   -> export tiny VGGT to ONNX through the parity gate
# Versions come from constraints.txt, as in CI's test environment; torch from TORCH_SPEC.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
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

echo "check-extras: [export] in a fresh venv"
"$python" -m venv "$work/export"
"$work/export/bin/python" -m pip install -q --disable-pip-version-check "$torch_spec" 2>&1 | pip_quiet
"$work/export/bin/python" -m pip install -q --disable-pip-version-check -c "$root/constraints.txt" "$root[export]" 2>&1 | pip_quiet
(cd "$work" && HF_HUB_OFFLINE=1 "$work/export/bin/edgescene" export --model vggt_tiny --random-weights \
  --format onnx --height 56 --width 84 --frames-range 1:2:2 --out "$work/tiny_onnx" >/dev/null)
test -s "$work/tiny_onnx/model.onnx" && grep -q '"accepted": true' "$work/tiny_onnx/artifact.json"
echo "check-extras: [export] exported tiny VGGT through the parity gate"
