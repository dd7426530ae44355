"""The Python module `cifar10` (built by scripts/setup-bindings.sh into .venv): results on
the in-repo sample, agreement with the C library, the GIL, and bad inputs."""

import ctypes
import os
import pathlib
import sys
import threading
import time

import numpy as np
import pytest

import cifar10
from conftest import MODEL, REPO, preprocess


@pytest.fixture(scope="module")
def model():
    return cifar10.Classifier(MODEL, threads=1)


def test_sample_count_equals_the_manifest(model, sample, manifest):
    labels, images = sample
    assert not images.flags.c_contiguous  # a transposed view: copied, not refused
    classes, probabilities = model.classify(images)
    expected = manifest["results"]["sample"]
    assert classes.dtype == np.int64 and classes.shape == (expected["total"],)
    assert probabilities.dtype == np.float32 and probabilities.shape == (expected["total"], 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (classes == probabilities.argmax(axis=1)).all()
    assert int((classes == labels).sum()) == expected["correct"]["cpu"]


def test_any_strides_give_the_same_results(model, sample):
    _, images = sample
    strided = images[:128:2]
    fortran = np.asfortranarray(images[:32])
    for array in (strided, fortran):
        got = model.classify(array)
        want = model.classify(np.ascontiguousarray(array))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_one_image_is_a_batch_of_one(model, sample):
    _, images = sample
    classes, probabilities = model.classify(images[3])
    batch_classes, batch_probabilities = model.classify(images[:4])
    assert classes.shape == (1,) and probabilities.shape == (1, 10)
    assert classes[0] == batch_classes[3]
    np.testing.assert_array_equal(probabilities[0], batch_probabilities[3])


def c_library():
    """libcifar10.so as `cargo test` (or `cargo build`) left it: $CIFAR10_C_LIBRARY, else
    the newest one under the target folder."""
    if "CIFAR10_C_LIBRARY" in os.environ:
        return pathlib.Path(os.environ["CIFAR10_C_LIBRARY"])
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    found = list(target.glob("*/deps/libcifar10.so")) + list(target.glob("*/libcifar10.so"))
    assert found, f"no libcifar10.so under {target}: run `cargo test -p cifar10-c` (or set CIFAR10_C_LIBRARY)"
    return max(found, key=lambda p: p.stat().st_mtime)


def c_logits(inputs):
    """Logits from the C library (the same engine reached through another binding)."""
    lib = ctypes.CDLL(str(c_library()))
    handle = ctypes.c_uint64(0)
    assert lib.cifar10_open_path(str(MODEL).encode(), 1, ctypes.byref(handle)) == 0
    out = np.zeros((len(inputs), 10), dtype=np.float32)
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    f32p = ctypes.POINTER(ctypes.c_float)
    lib.cifar10_logits.argtypes = [ctypes.c_uint64, f32p, ctypes.c_size_t, ctypes.c_size_t, f32p, ctypes.c_size_t]
    status = lib.cifar10_logits(handle, inputs.ctypes.data_as(f32p), inputs.size, len(inputs),
                                out.ctypes.data_as(f32p), out.size)
    assert status == 0
    assert lib.cifar10_close(ctypes.byref(handle)) == 0
    return out


def test_logits_match_the_c_library(model, sample):
    _, images = sample
    inputs = preprocess(images[:64])
    logits = model.logits(inputs)
    assert logits.dtype == np.float32 and logits.shape == (64, 10)
    assert np.abs(logits - c_logits(inputs)).max() <= 1e-5
    # Our numpy preprocessing is the library's: the softmax of these logits is classify's.
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(exp / exp.sum(axis=1, keepdims=True), model.classify(images[:64])[1], atol=1e-5)


def test_metadata_and_class_names(model, manifest):
    assert model.class_names == ["airplane", "automobile", "bird", "cat", "deer",
                                 "dog", "frog", "horse", "ship", "truck"]
    metadata = model.metadata
    full = manifest["results"]["full_test_set"]
    assert metadata["step"] == manifest["training"]["steps"]
    assert metadata["precision_at_1"] == pytest.approx(full["correct"]["cpu"] / full["total"])
    assert metadata["class_names"] == model.class_names
    assert isinstance(metadata["extra"], dict)
    assert model.threads == 1
    assert f"step={manifest['training']['steps']}" in repr(model)
    assert cifar10.__version__ and cifar10.NUM_CLASSES == 10


def test_model_from_bytes_with_two_threads_gives_the_same_results(model, sample):
    _, images = sample
    from_bytes = cifar10.Classifier(MODEL.read_bytes(), threads=2)
    assert from_bytes.threads == 2
    np.testing.assert_array_equal(from_bytes.classify(images[:40])[1], model.classify(images[:40])[1])
    assert cifar10.Classifier(bytearray(MODEL.read_bytes())).threads >= 1


def longest_pause_during(call):
    """Runs `call` on a worker thread while the main thread keeps running Python code;
    returns (longest pause of the main thread within the call, the call's duration)."""
    window = {}

    def work():
        window["start"] = time.perf_counter()
        call()
        window["end"] = time.perf_counter()

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        pauses = []  # (from, to) of every pause over 1 ms in the main thread's loop
        previous = time.perf_counter()
        worker = threading.Thread(target=work)
        worker.start()
        while worker.is_alive():
            now = time.perf_counter()
            if now - previous > 1e-3:
                pauses.append((previous, now))
            previous = now
        worker.join()
    finally:
        sys.setswitchinterval(old_interval)
    start, end = window["start"], window["end"]
    longest = max([min(b, end) - max(a, start) for a, b in pauses] + [0.0])
    print(f"call {end - start:.3f} s, longest main-thread pause inside it {longest:.4f} s")
    return longest, end - start


def test_inference_releases_the_gil(model, sample):
    """While a thread is inside classify(), the main thread keeps running Python code.
    Were the GIL held, the main thread would stall for the whole call (see the next
    test). The margin (half the call) is wide enough for a loaded machine; no absolute
    time is asserted."""
    batch = np.ascontiguousarray(sample[1])
    longest, duration = longest_pause_during(lambda: model.classify(batch))
    assert longest < 0.5 * duration


def test_the_gil_check_sees_a_call_that_holds_the_gil(sample):
    """The control for the test above: the same engine called through ctypes.PyDLL, which
    keeps the GIL during the call, stalls the main thread for (nearly) the whole call."""
    lib = ctypes.PyDLL(str(c_library()))
    handle = ctypes.c_uint64(0)
    assert lib.cifar10_open_path(str(MODEL).encode(), 1, ctypes.byref(handle)) == 0
    batch = np.ascontiguousarray(sample[1])
    classes = np.zeros(len(batch), dtype=np.int32)
    probabilities = np.zeros((len(batch), 10), dtype=np.float32)
    args = (handle, batch.ctypes.data, batch.size, len(batch), classes.ctypes.data, classes.size,
            probabilities.ctypes.data, probabilities.size)
    lib.cifar10_classify.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                                     ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    try:
        longest, duration = longest_pause_during(lambda: lib.cifar10_classify(*args))
    finally:
        assert lib.cifar10_close(ctypes.byref(handle)) == 0
    assert longest > 0.5 * duration


BAD_IMAGES = {
    "float64": (np.zeros((2, 32, 32, 3)), "uint8 numpy array.*got a float64 array"),
    "int16": (np.zeros((2, 32, 32, 3), dtype=np.int16), "got a int16 array"),
    "list": ([[0] * 3] * 32, "got a list"),
    "channels": (np.zeros((2, 32, 32, 4), dtype=np.uint8), r"shape \[2, 32, 32, 4\]"),
    "size": (np.zeros((2, 28, 28, 3), dtype=np.uint8), r"shape \[2, 28, 28, 3\]"),
    "rank 2": (np.zeros((32, 96), dtype=np.uint8), r"got shape \[32, 96\]"),
    "rank 5": (np.zeros((1, 1, 32, 32, 3), dtype=np.uint8), r"got shape \[1, 1, 32, 32, 3\]"),
    "empty batch": (np.zeros((0, 32, 32, 3), dtype=np.uint8), "empty batch"),
}


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_bad_images_raise_value_error(model, name):
    images, message = BAD_IMAGES[name]
    with pytest.raises(ValueError, match=message):
        model.classify(images)


BAD_INPUTS = {
    "float64": (np.zeros((1, 3, 24, 24)), "float32 numpy array.*got a float64 array"),
    "big-endian": (np.zeros((1, 3, 24, 24), dtype=">f4"), "float32 numpy array"),
    "size": (np.zeros((1, 3, 32, 32), dtype=np.float32), r"shape \[1, 3, 32, 32\]"),
    "rank 3": (np.zeros((3, 24, 24), dtype=np.float32), r"got shape \[3, 24, 24\]"),
    "empty batch": (np.zeros((0, 3, 24, 24), dtype=np.float32), "empty batch"),
}


def _with_value(value):
    x = np.zeros((2, 3, 24, 24), dtype=np.float32)
    x[1, 0, 0, 7] = value
    return x


# The library's one input rule, as the server's 400: finite and within +-1e6.
for _name, _value, _words in [("nan", np.nan, "NaN, not finite"), ("inf", np.inf, "inf, not finite"),
                              ("-inf", -np.inf, "-inf, not finite"), ("1e30", 1e30, "1e30, outside")]:
    BAD_INPUTS[_name] = (_with_value(_value), rf"input value 1735 \(image 1\) is {_words}")


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_logits_inputs_raise_value_error(model, name):
    x, message = BAD_INPUTS[name]
    with pytest.raises(ValueError, match=message):
        model.logits(x)


def test_bad_models_raise_os_error_or_value_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        cifar10.Classifier(tmp_path / "missing.safetensors")
    with pytest.raises(OSError):
        cifar10.Classifier(tmp_path)  # a folder
    good = MODEL.read_bytes()
    flipped = bytearray(good)
    flipped[-100] ^= 0x55
    for bad, message in [(b"", "truncated"), (good[: len(good) // 2], "truncated"), (bytes(flipped), "digest")]:
        with pytest.raises(ValueError, match=message):
            cifar10.Classifier(bad)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 4096)
    with pytest.raises(ValueError, match="corrupt.safetensors"):
        cifar10.Classifier(corrupt)
    with pytest.raises(ValueError, match="file path .* or bytes"):
        cifar10.Classifier(123)
    for threads in (0, 257):
        with pytest.raises(ValueError, match="threads"):
            cifar10.Classifier(MODEL, threads=threads)


def test_readme_example(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    # --- README example ---
    import numpy as np, cifar10
    model = cifar10.Classifier("models/cifar10.safetensors", threads=2)
    images = np.zeros((4, 32, 32, 3), dtype=np.uint8)  # N x 32 x 32 x RGB
    classes, probabilities = model.classify(images)
    print([model.class_names[c] for c in classes], probabilities.max(axis=1))
    # --- end of README example ---
    assert capsys.readouterr().out.startswith("['")


def test_the_int8_model_opens_the_same_way_and_gets_its_manifest_count(sample, manifest):
    labels, images = sample
    int8 = cifar10.Classifier(REPO / "models" / "cifar10-int8.safetensors", threads=1)
    classes, probabilities = int8.classify(images)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert int((classes == labels).sum()) == manifest["int8"]["results"]["sample"]["correct"]["cpu"]
