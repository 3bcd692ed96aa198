"""Run ONNX models on an emulated x86 CPU without VNNI, whatever CPU the tests run on.

onnxruntime picks its int8 kernels from CPUID when it loads (MLAS ``platform.cpp``); it has no
option or variable to choose them (``session.x64quantprecision`` goes the other way: it avoids the
saturating kernels). QEMU's user-mode emulator (Debian package ``qemu-user``, or ``qemu-user-static``)
runs this same Python and onnxruntime with the CPUID of an older CPU model: ``Haswell`` has AVX2 and
neither AVX-512 nor AVX-VNNI, so MLAS takes its AVX2 uint8 x int8 kernels (``vpmaddubsw``, int16
saturation) on any x86_64 host, a VNNI server included. ``SandyBridge`` (no AVX2) takes the SSE
kernels, which widen to 16 bits first and never saturate: the two show that the emulated CPU model,
not the host, decides which kernels run.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

EMULATORS = ("qemu-x86_64", "qemu-x86_64-static")
NO_VNNI_CPU = "Haswell"  # AVX2, FMA; no AVX-512, no AVX-VNNI: MLAS's saturating u8s8 kernels
NO_AVX2_CPU = "SandyBridge"  # AVX, no AVX2: MLAS's SSE u8 kernels (exact)
SKIP_REASON = (
    "needs QEMU's user-mode emulator (Debian package qemu-user: qemu-x86_64) on an x86_64 host to run "
    "onnxruntime on a CPU without VNNI"
)

# The emulated process: numpy and onnxruntime only (no torch: importing it emulated takes minutes).
_CHILD = r"""
import sys
import numpy as np
import onnxruntime as ort

for model, feeds, out in zip(*[iter(sys.argv[1:])] * 3):
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    inputs = np.load(feeds)
    cases = sorted({k.split("/")[0] for k in inputs.files}, key=int)
    results = {}
    for case in cases:
        feed = {k.split("/", 1)[1]: inputs[k] for k in inputs.files if k.split("/")[0] == case}
        for name, value in zip(names, session.run(names, feed)):
            results[f"{case}/{name}"] = value
    np.savez(out, **results)
"""


def emulator() -> str | None:
    """The QEMU x86_64 user-mode emulator here, or None (also off x86_64 hosts)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return next((path for path in map(shutil.which, EMULATORS) if path), None)


def run_emulated(
    jobs: list[tuple[Path, list[dict[str, np.ndarray]]]], work: Path, cpu: str = NO_VNNI_CPU, timeout: float = 300
) -> list[list[dict[str, np.ndarray]]]:
    """Run each (model file, list of feeds) on the emulated ``cpu``; the outputs, per job and feeds."""
    qemu = emulator()
    if qemu is None:
        raise RuntimeError(SKIP_REASON)
    work.mkdir(parents=True, exist_ok=True)
    args, outs = [], []
    for i, (model, cases) in enumerate(jobs):
        feeds, out = work / f"feeds{i}.npz", work / f"out{i}.npz"
        np.savez(feeds, **{f"{c}/{k}": v for c, case in enumerate(cases) for k, v in case.items()})
        args += [str(model), str(feeds), str(out)]
        outs.append(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [qemu, "-cpu", cpu, sys.executable, "-c", _CHILD, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "TCG doesn't support" not in line]
        raise RuntimeError(f"{qemu} -cpu {cpu} failed ({proc.returncode}):\n" + "\n".join(errors[-20:]))
    results = []
    for out, (_, cases) in zip(outs, jobs, strict=True):
        data = np.load(out)
        results.append(
            [{k.split("/", 1)[1]: data[k] for k in data.files if k.split("/")[0] == str(c)} for c in range(len(cases))]
        )
    return results
