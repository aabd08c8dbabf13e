#!/usr/bin/env python3
"""PyTorch reference timings for the cgrad CUDA benchmarks.

Runs the cases of every bench/torch_cases_*.py module next to this file and prints one line per case in the
format of the bench_* binaries (name, shape, median time in us, GB/s or TFLOP/s, fraction of the H200
ceiling), so the two outputs can be compared side by side. Times are CUDA events around each call, after
warm-up; bf16 where the case says so.

    python3 bench/torch_ref.py                 # every case
    python3 bench/torch_ref.py matmul adamw    # cases whose name contains one of the words
    python3 bench/torch_ref.py --list          # the case names
    python3 bench/torch_ref.py --runs 50 --quick

A case module defines CASES (importing torch only inside its setup functions, or guarded, so that --list
works without PyTorch), a list of dicts, a list of dicts:
    name   the kernel name (the same text as in the bench binary's line)
    shape  a short shape string
    setup  a function returning a zero-argument callable that runs the kernel once (tensors made inside)
    bytes  bytes read + written per call (for GB/s), or
    flops  floating-point operations per call (for TFLOP/s)
    quick  optional, False to leave the case out of --quick runs
Python is tooling only: nothing in the build or the tests needs it.
"""
import argparse
import glob
import importlib.util
import os
import statistics
import sys

H200_BW_GBS = 4200.0
H200_BF16_TFLOPS = 790.0


def load_cases(directory):
    cases = []
    for path in sorted(glob.glob(os.path.join(directory, "torch_cases_*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for case in getattr(module, "CASES", []):
            case = dict(case)
            case["module"] = name
            cases.append(case)
    return cases


def time_us(torch, fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1000.0)
    return statistics.median(times)


def format_line(name, shape, us, nbytes=None, flops=None):
    if flops:
        tf = flops / (us * 1e-6) / 1e12
        return "%-26s %-22s %10.1f us %9.1f TFLOP/s %5.1f%% of H200 bf16" % (name, shape, us, tf, 100.0 * tf / H200_BF16_TFLOPS)
    gbs = nbytes / (us * 1e-6) / 1e9
    return "%-26s %-22s %10.1f us %9.1f GB/s    %5.1f%% of H200 copy" % (name, shape, us, gbs, 100.0 * gbs / H200_BW_GBS)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("words", nargs="*", help="run only cases whose name contains one of these")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per case (median reported)")
    parser.add_argument("--quick", action="store_true", help="5 runs and no cases marked quick=False")
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    args = parser.parse_args(argv)

    cases = load_cases(os.path.dirname(os.path.abspath(__file__)))
    if args.words:
        cases = [c for c in cases if any(w in c["name"] for w in args.words)]
    if args.quick:
        cases = [c for c in cases if c.get("quick", True)]
    if args.list:
        for c in cases:
            print("%-26s %-22s (%s)" % (c["name"], c["shape"], c["module"]))
        return 0
    try:
        import torch
    except ImportError:
        print("torch_ref: PyTorch is not installed: skipped")
        return 0
    if not torch.cuda.is_available():
        print("torch_ref: no CUDA device: skipped")
        return 0
    runs = 5 if args.quick else args.runs
    print("torch_ref on %s (torch %s)" % (torch.cuda.get_device_name(0), torch.__version__))
    for c in cases:
        try:
            fn = c["setup"]()
            us = time_us(torch, fn, runs)
            print(format_line(c["name"], c["shape"], us, c.get("bytes"), c.get("flops")), flush=True)
        except Exception as e:  # one failing case (e.g. out of memory) does not stop the others
            print("%-26s %-22s failed: %s" % (c["name"], c["shape"], str(e).split("\n")[0]), flush=True)
        finally:
            fn = None
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
