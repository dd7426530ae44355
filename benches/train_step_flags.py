"""The flags `train_step.py` (PyTorch) and `train_step_tf.py` (TensorFlow) both take, as
`benches/train_step.rs` passes them, and the one line of JSON both print."""

import argparse
import json


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--input", choices=["fixed", "real"], default="fixed")
    parser.add_argument("--data-dir", default="../shared/cifar10/cifar-10-batches-bin")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (where the script supports it)")
    return parser.parse_args()


def report(framework, args, step_seconds):
    """The result line `train_step.rs` reads: each timed step's seconds."""
    print(json.dumps({"framework": framework, "input": args.input, "threads": args.threads,
                      "batch": args.batch, "device": args.device, "step_seconds": step_seconds}))
