"""Helpers of ``scripts/check_aarch64.sh`` (``make check-aarch64``): the Debian mirror to bootstrap the arm64
root from, and the comparison of two reconstruction folders (the x86_64 run and the emulated arm64 one).

    python3 scripts/check_aarch64.py mirror --suite bookworm
        prints the first deb URI of this machine's apt sources that serves SUITE (stdlib only: it runs
        with the system python3, before any venv exists)
    python scripts/check_aarch64.py env
        prints this Python's platform and the runtime's package versions and wheel tags as JSON (no paths)
    python scripts/check_aarch64.py frames VIDEO OUT --max-frames N
        decodes the first N frames as the runtime does (edgescene.runtime.frames.open_frames) into
        OUT/00000.png ... and OUT/decoded.npz (those RGB frames and the decoder's own YUV planes)
    python scripts/check_aarch64.py compare --pair NAME REFERENCE CANDIDATE [--pair ...] [--gate NAME ...]
            [--decoded REF.npz CAND.npz] [--tolerance 1e-4] [--out RESULT.json] [--meta KEY=VALUE ...]
            [--meta-json KEY=FILE ...]
        compares each pair of reconstruction folders (cameras: extrinsics, intrinsics; source intrinsics;
        per-frame depth), prints one line per quantity, writes RESULT.json (the --meta values, dotted keys
        nested, the decoded frames' differences, each comparison) and exits 1 when a gated pair differs
        by more than the tolerance or does not match frame for frame

The gate is an absolute difference. On the sample's first 8 frames depth spans 0.28 to 12.4 (VGGT's normalised
scale) and the intrinsics are pixels of the model input (focal about 150), so 1e-4 is at most about 1e-6 relative
for the focal length and 4e-4 for the nearest depth. Confidence and the fused point count are reported, not gated:
confidence is exp() of a logit and grows large where the model is sure, and one point more or less at a voxel or
percentile boundary says nothing about cameras or depth.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

SOURCE_FILES = ("/etc/apt/sources.list", "/etc/apt/sources.list.d")


# ---------------------------------------------------------------------------------------------- mirror
def _one_line_entries(text: str) -> list[tuple[list[str], list[str], list[str]]]:
    """``deb [options] URI SUITE COMPONENTS...`` lines -> (types, uris, suites)."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        kind = words[0]
        rest = words[1:]
        if rest and rest[0].startswith("["):  # [arch=amd64 signed-by=...]
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) >= 2:
            entries.append(([kind], [rest[0]], [rest[1]]))
    return entries


def _deb822_entries(text: str) -> list[tuple[list[str], list[str], list[str]]]:
    """deb822 ``.sources`` paragraphs (Types, URIs, Suites; ``Enabled: no`` skipped) -> (types, uris, suites)."""
    entries = []
    for paragraph in _paragraphs(text):
        fields: dict[str, str] = {}
        key = None
        for raw in paragraph:
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key is not None:  # a continuation line
                fields[key] += " " + raw.strip()
                continue
            if ":" not in raw:
                continue
            key, value = raw.split(":", 1)
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "uris" in fields and "suites" in fields:
            entries.append((fields.get("types", "").split(), fields["uris"].split(), fields["suites"].split()))
    return entries


def _paragraphs(text: str) -> list[list[str]]:
    paragraphs: list[list[str]] = [[]]
    for raw in text.splitlines():
        if raw.strip():
            paragraphs[-1].append(raw.rstrip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


def source_files(paths: tuple[str, ...] = SOURCE_FILES) -> list[Path]:
    """apt's source files in apt's order: sources.list, then sources.list.d/*.list and *.sources sorted
    (other names, such as ``*.list.disabled`` or ``*.save``, are not read by apt and not here)."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".list", ".sources") and p.is_file()))
    return files


def find_mirror(suite: str, files: list[Path]) -> str:
    """The first ``deb`` URI (http, https or file) whose entry serves ``suite`` itself (not only
    ``suite-updates`` or ``suite-security``). Raises ``LookupError`` naming the files read."""
    for path in files:
        text = path.read_text(errors="replace")
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for types, uris, suites in entries:
            if "deb" not in types or suite not in suites:
                continue
            for uri in uris:
                if uri.split(":", 1)[0] in ("http", "https", "file"):
                    return uri.rstrip("/")
    read = ", ".join(str(p) for p in files) or "none found"
    raise LookupError(f"no 'deb' source serves the suite {suite!r} in this machine's apt sources ({read})")


# ------------------------------------------------------------------------------------------------- env
RUNTIME_PACKAGES = ("onnxruntime", "numpy", "opencv-python-headless", "av", "pillow", "trimesh", "tqdm", "edgescene")


def describe_python() -> dict:
    """This interpreter's platform and the runtime's installed versions, wheel tags and onnxruntime's
    providers: what a result says ran. No file system paths."""
    import importlib.metadata as md
    import platform

    info: dict = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "libc": " ".join(platform.libc_ver()),
    }
    os_release = Path("/etc/os-release")
    if os_release.is_file():
        fields = dict(
            line.split("=", 1)
            for line in os_release.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        info["os"] = fields.get("PRETTY_NAME", "").strip('"')
    debian_version = Path("/etc/debian_version")
    if debian_version.is_file():
        info["debian_version"] = debian_version.read_text().strip()
    packages: dict = {}
    for name in RUNTIME_PACKAGES:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        wheel = dist.read_text("WHEEL") or ""
        tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
        packages[name] = {"version": dist.version, "wheel_tags": tags}
    info["packages"] = packages
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError as exc:
        info["onnxruntime_providers"] = f"import failed: {exc}"
    try:
        from numpy._core import _multiarray_umath as umath  # numpy 2

        found = [k for k, v in umath.__cpu_features__.items() if v]
        info["numpy_simd"] = {
            "baseline": list(umath.__cpu_baseline__),
            "dispatched": [k for k in umath.__cpu_dispatch__ if k in found],
        }
    except (ImportError, AttributeError):
        pass
    return info


# ---------------------------------------------------------------------------------------------- frames
def write_frames(video: Path, out: Path, max_frames: int) -> int:
    """The runtime's decoded RGB frames of ``video`` as lossless PNGs (a reconstruction of that folder sees
    exactly these pixels) plus ``decoded.npz``: ``rgb (S, H, W, 3) uint8`` and ``planes``, the decoder's
    output in its own pixel format (yuv420p: ``(S, H * 3 / 2, W)``) before any colour conversion."""
    import av
    import numpy as np
    from PIL import Image

    from edgescene.runtime.frames import open_frames

    out.mkdir(parents=True, exist_ok=True)
    rgb = [frame.rgb for frame in open_frames(video, max_frames=max_frames)]
    for i, image in enumerate(rgb):
        Image.fromarray(image).save(out / f"{i:05d}.png")
    planes = []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            if len(planes) == len(rgb):
                break
            planes.append(frame.to_ndarray())
    np.savez(out / "decoded.npz", rgb=np.stack(rgb), planes=np.stack(planes))
    return len(rgb)


def compare_decoded(reference: Path, candidate: Path) -> dict:
    """How two machines' decoded frames differ: the decoder's planes (H.264 decoding is bit-exact by
    the standard) and the RGB the runtime converts them to (0..255 levels)."""
    import numpy as np

    with np.load(reference) as r, np.load(candidate) as c:
        result = {}
        for key in ("planes", "rgb"):
            a, b = r[key].astype(np.int32), c[key].astype(np.int32)
            if a.shape != b.shape:
                result[key] = {"shape_reference": list(a.shape), "shape_candidate": list(b.shape)}
                continue
            d = np.abs(a - b)
            result[key] = {
                "shape": list(a.shape),
                "max_abs": int(d.max()),
                "mean_abs": round(float(d.mean()), 4),
                "mean_signed": round(float((b - a).mean()), 4),
                "fraction_differing": round(float((d > 0).mean()), 6),
            }
    return result


# --------------------------------------------------------------------------------------------- compare
def _max_abs(a, b) -> float:
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path.name} is missing from {path.parent}")
    return json.loads(path.read_text())


def compare_folders(reference: Path, candidate: Path, tolerance: float = 1e-4) -> dict:
    """Cameras, source intrinsics and depth of two reconstruction folders, frame by frame.

    Returns ``{"tolerance", "frames": [...], "max_abs": {...}, "within_tolerance", "mismatches": [...]}``;
    ``mismatches`` lists what does not line up at all (frame sets, files), which fails the check too."""
    import numpy as np

    mismatches: list[str] = []
    ref_cams = _read_json(reference / "cameras.json")
    cand_cams = _read_json(candidate / "cameras.json")
    ref_frames = {f["index"]: f for f in ref_cams["frames"]}
    cand_frames = {f["index"]: f for f in cand_cams["frames"]}
    if sorted(ref_frames) != sorted(cand_frames):
        mismatches.append(f"camera frames differ: {sorted(ref_frames)} vs {sorted(cand_frames)}")
    if ref_cams.get("image_size") != cand_cams.get("image_size"):
        mismatches.append(f"image_size differs: {ref_cams.get('image_size')} vs {cand_cams.get('image_size')}")

    ref_depth = {p.name: p for p in sorted((reference / "depth").glob("*.npz"))}
    cand_depth = {p.name: p for p in sorted((candidate / "depth").glob("*.npz"))}
    if sorted(ref_depth) != sorted(cand_depth):
        mismatches.append(f"depth files differ: {sorted(ref_depth)} vs {sorted(cand_depth)}")
    if not ref_depth:
        mismatches.append("no depth/*.npz in the reference folder")

    frames = []
    for index in sorted(set(ref_frames) & set(cand_frames)):
        r, c = ref_frames[index], cand_frames[index]
        row: dict = {
            "index": index,
            "extrinsics": _max_abs(r["extrinsics"], c["extrinsics"]),
            "intrinsics": _max_abs(r["intrinsics"], c["intrinsics"]),
        }
        frames.append(row)
    by_index = {row["index"]: row for row in frames}
    for name in sorted(set(ref_depth) & set(cand_depth)):
        with np.load(ref_depth[name]) as rz, np.load(cand_depth[name]) as cz:
            index = int(rz["frame_index"]) if "frame_index" in rz.files else int(Path(name).stem)
            if "frame_index" in cz.files and int(cz["frame_index"]) != index:
                mismatches.append(f"{name}: frame_index {index} vs {int(cz['frame_index'])}")
            rd, cd = rz["depth"].astype(np.float64), cz["depth"].astype(np.float64)
            row = by_index.setdefault(index, {"index": index})
            row["depth"] = _max_abs(rd, cd)
            row["depth_rel"] = float(np.max(np.abs(rd - cd) / np.maximum(np.abs(rd), 1e-12)))
            row["depth_range"] = [float(rd.min()), float(rd.max())]
            if "conf" in rz.files and "conf" in cz.files:
                rc, cc = rz["conf"].astype(np.float64), cz["conf"].astype(np.float64)
                row["conf"] = _max_abs(rc, cc)
                row["conf_rel"] = float(np.max(np.abs(rc - cc) / np.maximum(np.abs(rc), 1e-12)))
    frames = [by_index[i] for i in sorted(by_index)]

    max_abs: dict[str, float] = {}
    for key in ("extrinsics", "intrinsics", "depth", "depth_rel", "conf", "conf_rel"):
        values = [row[key] for row in frames if key in row]
        if values:
            max_abs[key] = max(values)

    ref_src, cand_src = reference / "cameras_source.json", candidate / "cameras_source.json"
    if ref_src.is_file() and cand_src.is_file():
        try:
            max_abs["source_intrinsics"] = _max_abs(
                _read_json(ref_src)["intrinsics"], _read_json(cand_src)["intrinsics"]
            )
        except ValueError as exc:
            mismatches.append(f"cameras_source.json intrinsics: {exc}")

    gated = [max_abs.get(k, math.inf) for k in ("extrinsics", "intrinsics", "depth")]
    if "source_intrinsics" in max_abs:
        gated.append(max_abs["source_intrinsics"])
    counts = {}
    ref_report, cand_report = reference / "report.json", candidate / "report.json"
    if ref_report.is_file() and cand_report.is_file():
        rr, cr = _read_json(ref_report), _read_json(cand_report)
        for key in ("frames_seen", "keyframes", "windows", "points"):
            counts[key] = [rr.get(key), cr.get(key)]
            if key != "points" and rr.get(key) != cr.get(key):
                mismatches.append(f"report.json {key}: {rr.get(key)} vs {cr.get(key)}")
    reports = {}
    for side, folder in (("reference", reference), ("candidate", candidate)):
        if (folder / "report.json").is_file():
            r = _read_json(folder / "report.json")
            t = r.get("timings_s", {})
            reports[side] = {
                "backend": r.get("backend"),
                "model_input_hw": r.get("preprocessing", {}).get("model_input_hw"),
                "seconds": {k: t.get(k) for k in ("open_s", "model_s", "total_s")},
            }
    return {
        "tolerance": tolerance,
        "reports": reports,
        "gated": ["extrinsics", "intrinsics", "source_intrinsics", "depth"],
        "max_abs": max_abs,
        "frames": frames,
        "counts_reference_candidate": counts,
        "mismatches": mismatches,
        "within_tolerance": not mismatches and all(v <= tolerance for v in gated),
    }


def format_comparison(result: dict) -> list[str]:
    tol = result["tolerance"]
    lines = []
    for row in result["frames"]:
        cells = " ".join(f"{k}={row[k]:.3g}" for k in ("extrinsics", "intrinsics", "depth", "conf") if k in row)
        lines.append(f"frame {row['index']:>3}: max |d| {cells}")
    for key, value in result["max_abs"].items():
        flag = "" if key not in result["gated"] else (" ok" if value <= tol else f" OVER {tol:g}")
        lines.append(f"max |d| {key}: {value:.3g}{flag}")
    for key, (ref, cand) in result["counts_reference_candidate"].items():
        lines.append(f"{key}: reference {ref}, candidate {cand}")
    lines.extend(f"mismatch: {m}" for m in result["mismatches"])
    verdict = "within" if result["within_tolerance"] else "NOT within"
    lines.append(f"cameras and depth {verdict} {tol:g}")
    return lines


def parse_value(text: str):
    """JSON where the text is JSON (numbers, null, true), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def set_field(target: dict, dotted: str, value) -> None:
    """``set_field(d, "a.b", 1)`` -> ``d["a"]["b"] = 1`` (creating ``d["a"]``)."""
    *parents, last = dotted.split(".")
    for name in parents:
        target = target.setdefault(name, {})
    target[last] = value


def _split(item: str, option: str) -> tuple[str, str]:
    if "=" not in item:
        raise SystemExit(f"{option} takes KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mirror", help="the Debian mirror of this machine's apt sources for a suite")
    m.add_argument("--suite", required=True)
    sub.add_parser("env", help="this Python's platform and runtime packages as JSON")
    f = sub.add_parser("frames", help="the runtime's decoded frames of a video as PNGs and decoded.npz")
    f.add_argument("video", type=Path)
    f.add_argument("out", type=Path)
    f.add_argument("--max-frames", type=int, required=True)
    c = sub.add_parser("compare", help="compare pairs of reconstruction folders")
    c.add_argument("--pair", nargs=3, action="append", required=True, metavar=("NAME", "REFERENCE", "CANDIDATE"))
    c.add_argument("--gate", action="append", default=[], metavar="NAME", help="a pair that must be within tolerance")
    c.add_argument("--decoded", nargs=2, type=Path, metavar=("REFERENCE_NPZ", "CANDIDATE_NPZ"))
    c.add_argument("--tolerance", type=float, default=1e-4)
    c.add_argument("--out", type=Path, help="write the result JSON here")
    c.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="a field of --out (JSON or text)")
    c.add_argument("--meta-json", action="append", default=[], metavar="KEY=FILE", help="a field of --out from a file")
    args = parser.parse_args(argv)
    if args.command == "mirror":
        try:
            print(find_mirror(args.suite, source_files()))
        except LookupError as exc:
            print(f"check_aarch64: {exc}; pass --mirror URL", file=sys.stderr)
            return 1
        return 0
    if args.command == "env":
        print(json.dumps(describe_python(), indent=1))
        return 0
    if args.command == "frames":
        n = write_frames(args.video, args.out, args.max_frames)
        print(f"check-aarch64: {n} decoded frames -> {args.out}")
        return 0
    names = [name for name, _, _ in args.pair]
    unknown = sorted(set(args.gate) - set(names))
    if unknown or len(set(names)) != len(names):
        parser.error(f"--gate names a pair that is not given, or a pair name repeats: {unknown or names}")
    result: dict = {}
    for item in args.meta:
        key, value = _split(item, "--meta")
        set_field(result, key, parse_value(value))
    for item in args.meta_json:
        key, value = _split(item, "--meta-json")
        set_field(result, key, json.loads(Path(value).read_text()))
    if args.decoded is not None:
        decoded = compare_decoded(*args.decoded)
        result["decoded_frames"] = decoded
        for key, d in decoded.items():
            if "max_abs" in d:
                print(
                    f"check-aarch64: decoded {key}: max |d| {d['max_abs']}, mean |d| {d['mean_abs']}, "
                    f"{100 * d['fraction_differing']:.1f} % of values differ"
                )
    passed = True
    result["comparisons"] = {}
    for name, reference, candidate in args.pair:
        comparison = compare_folders(Path(reference), Path(candidate), args.tolerance)
        comparison["gate"] = name in args.gate
        result["comparisons"][name] = comparison
        print(f"check-aarch64: [{name}] ({'gate' if name in args.gate else 'reported, not gated'})")
        for line in format_comparison(comparison):
            print(f"check-aarch64: [{name}] {line}")
        if name in args.gate and not comparison["within_tolerance"]:
            passed = False
    result["passed"] = passed
    if args.out is not None:
        from edgescene.core.atomic import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
