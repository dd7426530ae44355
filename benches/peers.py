"""Peer engines for `cargo bench --bench engines`: OpenVINO and TFLite (XNNPACK) on the same model,
and the two int8 anchors: TFLite full-integer quantization and ONNX Runtime static quantization.

Run by the bench with the peers venv's Python (`scripts/setup-bench-peers.sh` makes it), as

    python benches/peers.py --onnx MODEL.onnx --safetensors MODEL.safetensors \
        --calibration IMAGES.f32 --workdir DIR

It prints one JSON line naming each peer with its version, or why it is absent, then serves
requests on stdin, one per line, answering each with one line:

    rate PEER BATCH THREADS SECONDS   the best images per second of a few timed runs
    latency PEER CALLS SECONDS        the nanoseconds of each single-image call on one thread,
                                      space-separated: at least CALLS, over at least SECONDS
    precision PEER IMAGES LABELS      `CORRECT TOTAL`: top-1 hits on the images of file IMAGES
                                      (float32, preprocessed, NCHW) against the bytes of LABELS
    size PEER                         the bytes of the model file the peer runs

The bench alternates these requests with its own measurements, so every engine sees the same
machine state. Latencies are timed here around each call, so they include the Python binding's
call overhead.

OpenVINO reads the ONNX export and runs in f32 (`INFERENCE_PRECISION_HINT`: on CPUs with
bf16 it would otherwise pick bf16, a different computation). TFLite gets the same network
built with TensorFlow from the weights file (NHWC, its native layout) and runs with the
XNNPACK delegate, its default for float models.

The int8 anchors quantize the same float model with their own tools, calibrated on the images of
`--calibration` (float32, preprocessed, NCHW: the bench writes the first 1,000 training images):
`tflite-int8` is TensorFlow Lite's full-integer post-training quantization (`Optimize.DEFAULT`
with a representative dataset: int8 weights and activations, float input and output, ops without
an int8 kernel left in float between dequantize and quantize) run by XNNPACK; `ort-int8` is ONNX
Runtime's `quantize_static` of the float ONNX export (QDQ format, per-channel int8 weights, int8
activations, MinMax calibration) run by ONNX Runtime's Python binding.
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


def tutorial_graph(tf, w, batch):
    """The tutorial network built with TensorFlow from the float weights `w`, as a `tf.function`
    on NHWC input of `batch` images (`None`: any batch)."""

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
        x = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, 2304])  # CHW flatten order
        x = dense(x, "local3")
        x = dense(x, "local4")
        return dense(x, "softmax_linear", relu=False)

    return forward


def read_images(path):
    """Preprocessed NCHW float32 images written by the bench."""
    return np.fromfile(path, dtype="<f4").reshape(-1, 3, 24, 24)


def count_correct(logits_of, images, labels, batch=100):
    """Top-1 hits of `logits_of(batch of NCHW images)` over all `images`."""
    correct = 0
    for start in range(0, len(images), batch):
        logits = logits_of(images[start : start + batch])
        correct += int((np.argmax(logits, axis=1) == labels[start : start + batch]).sum())
    return correct


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
        forward = tutorial_graph(self.tf, self.weights, batch)
        converter = self.tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], forward)
        return converter.convert()

    def model(self, batch):
        if batch not in self.models:
            self.models[batch] = self.convert(batch)
        return self.models[batch]

    def interpreter(self, batch, threads):
        """An interpreter with its tensors allocated for `batch` images, and its input and output
        indices."""
        interpreter = self.Interpreter(model_content=self.model(batch), num_threads=threads)
        index = interpreter.get_input_details()[0]["index"]
        if tuple(interpreter.get_input_details()[0]["shape"]) != (batch, 24, 24, 3):
            interpreter.resize_tensor_input(index, [batch, 24, 24, 3])
        interpreter.allocate_tensors()
        return interpreter, index, interpreter.get_output_details()[0]["index"]

    def runner(self, batch, threads):
        """A function running one inference on `batch` images with `threads` threads."""
        interpreter, index, _ = self.interpreter(batch, threads)
        x = np.random.default_rng(0).standard_normal((batch, 24, 24, 3), dtype=np.float32)

        def run():
            interpreter.set_tensor(index, x)
            interpreter.invoke()

        return run

    def logits(self, images):
        """Logits of NCHW `images`, on two threads."""
        interpreter, index, output = self.interpreter(len(images), 2)
        interpreter.set_tensor(index, np.ascontiguousarray(images.transpose(0, 2, 3, 1)))
        interpreter.invoke()
        return interpreter.get_tensor(output)

    def size(self):
        return len(self.model(1))


class TfLiteInt8(TfLite):
    """TFLite's full-integer post-training quantization of the tutorial graph, one model (any
    batch) calibrated once on the bench's calibration images."""

    def __init__(self, safetensors_path, calibration_path):
        super().__init__(safetensors_path)
        self.calibration = read_images(calibration_path)
        self.int8 = None

    def model(self, batch):
        if self.int8 is None:
            tf = self.tf
            forward = tutorial_graph(tf, self.weights, None)
            converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], forward)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]

            def representative_dataset():
                for image in self.calibration:
                    yield [np.ascontiguousarray(image.transpose(1, 2, 0)[None])]

            converter.representative_dataset = representative_dataset
            self.int8 = converter.convert()
        return self.int8


class OrtInt8:
    """ONNX Runtime's `quantize_static` (QDQ, per-channel) of the float ONNX export, calibrated on
    the bench's calibration images and run by ONNX Runtime's Python binding."""

    def __init__(self, onnx_path, calibration_path, workdir):
        import onnxruntime as ort
        from onnxruntime import quantization as q

        self.ort = ort
        self.version = ort.__version__
        self.path = f"{workdir}/model-ort-int8.onnx"
        input_name = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).get_inputs()[0].name
        images = read_images(calibration_path)

        class Reader(q.CalibrationDataReader):
            def __init__(self):
                self.next = 0

            def get_next(self):
                if self.next >= len(images):
                    return None
                self.next += 1
                return {input_name: images[self.next - 1 : self.next]}

        q.quantize_static(
            onnx_path,
            self.path,
            Reader(),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
        )
        self.input = input_name
        self.sessions = {}

    def session(self, threads):
        if threads not in self.sessions:
            options = self.ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
            self.sessions[threads] = self.ort.InferenceSession(
                self.path, options, providers=["CPUExecutionProvider"]
            )
        return self.sessions[threads]

    def runner(self, batch, threads):
        """A function running one inference on `batch` images with `threads` threads."""
        session = self.session(threads)
        x = np.random.default_rng(0).standard_normal((batch, 3, 24, 24), dtype=np.float32)
        return lambda: session.run(None, {self.input: x})

    def logits(self, images):
        return self.session(2).run(None, {self.input: np.ascontiguousarray(images)})[0]

    def size(self):
        import os

        return os.path.getsize(self.path)


def answer(peers, request):
    """The answer line to one request (the module's docstring lists them)."""
    match request:
        case ["rate", name, batch, threads, seconds]:
            run = peers[name].runner(int(batch), int(threads))
            return f"{best_rate(run, int(batch), float(seconds)):.3f}"
        case ["latency", name, calls, seconds]:
            return " ".join(map(str, latencies(peers[name].runner(1, 1), int(calls), float(seconds))))
        case ["precision", name, images, labels]:
            images, labels = read_images(images), np.fromfile(labels, dtype=np.uint8)
            if len(images) != len(labels):
                raise ValueError(f"{len(images)} images but {len(labels)} labels")
            return f"{count_correct(peers[name].logits, images, labels)} {len(labels)}"
        case ["size", name]:
            return str(peers[name].size())
        case _:
            raise ValueError(f"unknown request {' '.join(request)!r}: want `rate PEER BATCH THREADS SECONDS` "
                             "`latency PEER CALLS SECONDS`, `precision PEER IMAGES LABELS` or `size PEER`")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--safetensors", required=True)
    parser.add_argument("--calibration", required=True, help="float32 NCHW preprocessed calibration images")
    parser.add_argument("--workdir", required=True, help="where the ONNX Runtime int8 model is written")
    args = parser.parse_args()
    peers, status = {}, {}
    makers = [
        ("openvino", lambda: OpenVino(args.onnx)),
        ("tflite", lambda: TfLite(args.safetensors)),
        ("tflite-int8", lambda: TfLiteInt8(args.safetensors, args.calibration)),
        ("ort-int8", lambda: OrtInt8(args.onnx, args.calibration, args.workdir)),
    ]
    for name, make in makers:
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
