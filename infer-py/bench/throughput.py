"""Images/s of cifar10.Classifier.classify at batch 128 against the Rust engine doing the
same work on the same thread count (infer-c's example `throughput`), alternating the two
ROUNDS times so that a busy machine affects both alike; prints every round and the spread.

    cargo build --release -p cifar10-c --example throughput
    .venv/bin/python infer-py/bench/throughput.py --threads 1 --rounds 5 --seconds 3
"""

import argparse
import pathlib
import subprocess
import time

import numpy as np

import cifar10

REPO = pathlib.Path(__file__).resolve().parents[2]
BATCH = 128


def python_rate(model, images, seconds):
    model.classify(images)  # warm-up, as the Rust side does
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        done += len(model.classify(images)[0])
    return done / (time.perf_counter() - start)


def rust_rate(threads, seconds):
    exe = REPO / "target" / "release" / "examples" / "throughput"
    out = subprocess.run([str(exe), str(threads), str(seconds)], check=True, capture_output=True, text=True)
    return float(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    records = np.fromfile(REPO / "data/sample/test_batch.bin", dtype=np.uint8).reshape(-1, 3073)[:BATCH]
    images = np.ascontiguousarray(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    model = cifar10.Classifier(REPO / "models/cifar10.safetensors", threads=args.threads)
    ratios = []
    for round_ in range(args.rounds):
        rust = rust_rate(args.threads, args.seconds)
        python = python_rate(model, images, args.seconds)
        ratios.append(python / rust)
        print(f"round {round_ + 1}: rust {rust:8.1f} img/s, python {python:8.1f} img/s, python/rust {python / rust:.3f}")
    ratios.sort()
    print(f"python/rust over {args.rounds} rounds: median {ratios[len(ratios) // 2]:.3f}, "
          f"min {ratios[0]:.3f}, max {ratios[-1]:.3f} (threads {args.threads}, batch {BATCH})")


if __name__ == "__main__":
    main()
