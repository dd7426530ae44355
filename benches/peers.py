"""Peer engines for `cargo bench --bench engines`: OpenVINO and TFLite (XNNPACK) on the same model.

Run by the bench with the peers venv's Python (`scripts/setup-bench-peers.sh` makes it), as

    python benches/peers.py --onnx MODEL.onnx --safetensors MODEL.safetensors

It prints one JSON line naming each peer with its version, or why it is absent, then serves
requests on stdin, one per line, answering each with one line:

    rate PEER BATCH THREADS SECONDS   the best images per second of a few timed runs
    latency PEER CALLS SECONDS        the nanoseconds of each single-image call on one thread,
                                      space-separated: at least CALLS, over at least SECONDS

The bench alternates these requests with its own measurements, so every engine sees the same
machine state. Latencies are timed here around each call, so they include the Python binding's
call overhead.

OpenVINO reads the ONNX export and runs in f32 (`INFERENCE_PRECISION_HINT`: on CPUs with
bf16 it would otherwise pick bf16, a different computation). TFLite gets the same network
built with TensorFlow from the weights file (NHWC, its native layout) and runs with the
XNNPACK delegate, its default for float models.
"""

import argparse
import json
import struct
import sys
import time

import numpy as np

LRN = dict(depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)


def read_safetensors(path):
    """The tensors of a safetensors file as float32 numpy arrays (no dependency needed)."""
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = data[8 + header_len :]
    tensors = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if spec["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {spec['dtype']}, expected F32")
        start, end = spec["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(spec["shape"])
    return tensors


def latencies(run, calls, seconds):
    """Nanoseconds of each call of `run()`, after a warm-up call: at least `calls` of them, over
    at least `seconds`."""
    run()
    times, start = [], time.perf_counter_ns()
    while len(times) < calls or time.perf_counter_ns() - start < seconds * 1e9:
        t = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - t)
    return times


def best_rate(run, batch, seconds):
    """Images per second of `run()` on `batch` images: the best of three timed stretches."""
    run()  # warm-up
    best = 0.0
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < seconds / 3:
            run()
            calls += 1
        best = max(best, calls * batch / (time.perf_counter() - start))
    return best


class OpenVino:
    def __init__(self, onnx_path):
        import openvino as ov

        self.ov = ov
        self.version = ov.get_version()
        self.core = ov.Core()
        self.onnx_path = onnx_path
        self.compiled = {}

    def runner(self, batch, threads):
        """A function running one inference on `batch` images with `threads` threads."""
        key = (batch, threads)
        if key not in self.compiled:
            model = self.core.read_model(self.onnx_path)
            model.reshape({model.inputs[0].any_name: [batch, 3, 24, 24]})
            config = {
                "INFERENCE_NUM_THREADS": threads,
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32",
            }
            self.compiled[key] = self.core.compile_model(model, "CPU", config)
        request = self.compiled[key].create_infer_request()
        x = np.random.default_rng(0).standard_normal((batch, 3, 24, 24), dtype=np.float32)
        return lambda: request.infer({0: x})


class TfLite:
    def __init__(self, safetensors_path):
        import tensorflow as tf

        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            Interpreter = tf.lite.Interpreter
        self.tf = tf
        self.Interpreter = Interpreter
        self.version = tf.__version__
        self.weights = read_safetensors(safetensors_path)
        self.models = {}

    def convert(self, batch):
        tf, w = self.tf, self.weights

        def conv(x, name):
            kernel = tf.constant(w[f"{name}.weight"].transpose(2, 3, 1, 0))  # OIHW -> HWIO
            return tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME") + w[f"{name}.bias"])

        def dense(x, name, relu=True):
            y = tf.matmul(x, tf.constant(w[f"{name}.weight"].T)) + w[f"{name}.bias"]
            return tf.nn.relu(y) if relu else y

        @tf.function(input_signature=[tf.TensorSpec([batch, 24, 24, 3], tf.float32)])
        def forward(x):
            x = conv(x, "conv1")
            x = tf.nn.max_pool2d(x, 3, 2, "SAME")
            x = tf.nn.local_response_normalization(x, **LRN)
            x = conv(x, "conv2")
            x = tf.nn.local_response_normalization(x, **LRN)
            x = tf.nn.max_pool2d(x, 3, 2, "SAME")
            x = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [batch, -1])  # CHW flatten order
            x = dense(x, "local3")
            x = dense(x, "local4")
            return dense(x, "softmax_linear", relu=False)

        converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], forward)
        return converter.convert()

    def runner(self, batch, threads):
        """A function running one inference on `batch` images with `threads` threads."""
        if batch not in self.models:
            self.models[batch] = self.convert(batch)
        interpreter = self.Interpreter(model_content=self.models[batch], num_threads=threads)
        interpreter.allocate_tensors()
        index = interpreter.get_input_details()[0]["index"]
        x = np.random.default_rng(0).standard_normal((batch, 24, 24, 3), dtype=np.float32)

        def run():
            interpreter.set_tensor(index, x)
            interpreter.invoke()

        return run


def answer(peers, request):
    """The answer line to one request (the module's docstring lists them)."""
    match request:
        case ["rate", name, batch, threads, seconds]:
            run = peers[name].runner(int(batch), int(threads))
            return f"{best_rate(run, int(batch), float(seconds)):.3f}"
        case ["latency", name, calls, seconds]:
            return " ".join(map(str, latencies(peers[name].runner(1, 1), int(calls), float(seconds))))
        case _:
            raise ValueError(f"unknown request {' '.join(request)!r}: want `rate PEER BATCH THREADS SECONDS` "
                             "or `latency PEER CALLS SECONDS`")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--safetensors", required=True)
    args = parser.parse_args()
    peers, status = {}, {}
    for name, make in [("openvino", lambda: OpenVino(args.onnx)), ("tflite", lambda: TfLite(args.safetensors))]:
        try:
            peers[name] = make()
            status[name] = {"version": peers[name].version}
        except Exception as e:  # a missing package or a broken install: the bench says why
            status[name] = {"absent": f"{type(e).__name__}: {e}"}
    print(json.dumps(status), flush=True)
    for line in sys.stdin:
        try:
            print(answer(peers, line.split()), flush=True)
        except Exception as e:
            print(f"error {type(e).__name__}: {e}".replace("\n", " "), flush=True)


if __name__ == "__main__":
    main()
