#!/usr/bin/env bash
# Installs torch into one Python environment, the build asked for, and checks that it got it.
# The one place that chooses the build (the Makefile and scripts/check_extras.sh call it):
#
#   TORCH=cpu   (default) the CPU build. On Linux x86_64 the public package index's torch wheel is the
#               CUDA build (several GB of CUDA libraries), so the PyTorch CPU index (TORCH_CPU_INDEX) is
#               added beside the configured ones: pip prefers its 2.13.0+cpu over the plain 2.13.0.
#               On macOS and Windows every torch wheel is a CPU build anyway.
#   TORCH=cuda  the build the configured index gives: CUDA on Linux x86_64 and aarch64 servers.
#
# TORCH_VERSION pins the release (constraints.txt pins the same public version, which both builds
# satisfy). Usage: TORCH=cpu|cuda scripts/install_torch.sh PYTHON
set -euo pipefail
python="${1:?usage: TORCH=cpu|cuda $0 PYTHON}"
build="${TORCH:-cpu}"
version="${TORCH_VERSION:-2.13.0}"
cpu_index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
pip=("$python" -m pip --disable-pip-version-check -q)

case "$build" in
  cpu)
    echo "install-torch: torch==$version, CPU build (index $cpu_index beside the configured ones)"
    # torch alone from both indexes, then its dependencies from the configured index only (asking the
    # CPU index for each of them too only costs time, and retries where it is out of reach)
    "${pip[@]}" install --no-deps "torch==$version" --extra-index-url "$cpu_index"
    "${pip[@]}" install "torch==$version"
    ;;
  cuda)
    echo "install-torch: torch==$version, CUDA build (the configured package index)"
    "${pip[@]}" install "torch==$version"
    ;;
  *)
    echo "install-torch: TORCH=$build is not a build; use TORCH=cpu (the default) or TORCH=cuda" >&2
    exit 2
    ;;
esac

cuda="$("$python" -W ignore -c "import torch; print(torch.version.cuda or '')")"
installed="$("$python" -W ignore -c "import torch; print(torch.__version__)")"
if [ "$build" = cuda ] && [ -z "$cuda" ]; then
  echo "install-torch: asked for the CUDA build but torch $installed in $python is a CPU build." >&2
  echo "install-torch: an earlier install or a pip configuration (a local wheel folder, find-links) provided it;" >&2
  echo "install-torch: remove it ($python -m pip uninstall torch, or delete the virtual environment) and run again." >&2
  exit 1
fi
if [ "$build" = cpu ] && [ -n "$cuda" ]; then
  echo "install-torch: note: torch $installed (CUDA $cuda) was already installed and is kept; it runs on the CPU too."
fi
echo "install-torch: torch $installed (${cuda:+CUDA $cuda}${cuda:-CPU build})"
