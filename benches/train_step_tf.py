"""The CIFAR-10 tutorial's training step in TensorFlow itself, for benches/train_step.rs.

The tutorial's own ops (cifar10.py): conv2d SAME + bias_add + relu, max_pool 3x3/2 SAME,
tf.nn.lrn(depth_radius 4, bias 1, alpha 0.001/9, beta 0.75), local3/local4 with weight decay
0.004 (tf.nn.l2_loss), softmax_linear, mean sparse softmax cross-entropy, plain SGD and an
ExponentialMovingAverage(0.9999, num_updates) of every variable, in one tf.function.

Inputs (--input):
  fixed  one random batch, reused (compute only);
  real   the tutorial's distorted_inputs as a tf.data pipeline over the CIFAR-10 binary
         files in --data-dir: random 24x24 crop, random left-right flip, random brightness
         (max delta 63), random contrast (0.2-1.8), per-image standardisation, shuffled,
         batched, prefetched; the time of a step includes waiting for its batch.

Prints one JSON line: {"framework", "input", "threads", "batch", "step_seconds": [...]}.
Run with the optional peers venv (scripts/setup-bench-peers.sh installs tensorflow-cpu):
    .venv/peers/bin/python benches/train_step_tf.py --steps 20 --threads 2 --input real --data-dir DIR
"""

import glob
import os
import time

from train_step_flags import parse_args, report

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

RECORD_BYTES = 1 + 32 * 32 * 3


def variables():
    def weight(shape, stddev):
        return tf.Variable(tf.random.truncated_normal(shape, stddev=stddev))

    def const(n, value):
        return tf.Variable(tf.fill([n], value))

    return {
        "conv1/weights": weight([5, 5, 3, 64], 5e-2), "conv1/biases": const(64, 0.0),
        "conv2/weights": weight([5, 5, 64, 64], 5e-2), "conv2/biases": const(64, 0.1),
        "local3/weights": weight([6 * 6 * 64, 384], 0.04), "local3/biases": const(384, 0.1),
        "local4/weights": weight([384, 192], 0.04), "local4/biases": const(192, 0.1),
        "softmax_linear/weights": weight([192, 10], 1 / 192.0), "softmax_linear/biases": const(10, 0.0),
    }


def inference(v, images):
    def conv(x, name):
        y = tf.nn.conv2d(x, v[name + "/weights"], [1, 1, 1, 1], padding="SAME")
        return tf.nn.relu(tf.nn.bias_add(y, v[name + "/biases"]))

    def pool(x):
        return tf.nn.max_pool2d(x, ksize=3, strides=2, padding="SAME")

    def lrn(x):
        return tf.nn.lrn(x, 4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)

    x = lrn(pool(conv(images, "conv1")))
    x = pool(lrn(conv(x, "conv2")))
    x = tf.reshape(x, [tf.shape(x)[0], -1])
    x = tf.nn.relu(tf.matmul(x, v["local3/weights"]) + v["local3/biases"])
    x = tf.nn.relu(tf.matmul(x, v["local4/weights"]) + v["local4/biases"])
    return tf.matmul(x, v["softmax_linear/weights"]) + v["softmax_linear/biases"]


def distorted(record):
    raw = tf.io.decode_raw(record, tf.uint8)
    label = tf.cast(raw[0], tf.int32)
    image = tf.cast(tf.transpose(tf.reshape(raw[1:], [3, 32, 32]), [1, 2, 0]), tf.float32)
    image = tf.image.random_crop(image, [24, 24, 3])
    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_brightness(image, max_delta=63)
    image = tf.image.random_contrast(image, lower=0.2, upper=1.8)
    return tf.image.per_image_standardization(image), label


def real_batches(data_dir, batch):
    files = sorted(glob.glob(os.path.join(data_dir, "data_batch_*.bin")))
    if not files:
        raise SystemExit(f"no data_batch_*.bin in {data_dir}")
    dataset = tf.data.FixedLengthRecordDataset(files, RECORD_BYTES).repeat().shuffle(10_000, seed=0)
    dataset = dataset.map(distorted, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True)
    return iter(dataset.prefetch(tf.data.AUTOTUNE))


def main():
    args = parse_args()
    if args.device != "cpu":
        raise SystemExit(f"--device {args.device}: this script runs TensorFlow on the CPU only")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.random.set_seed(0)
    v = variables()
    trainable = list(v.values())
    global_step = tf.Variable(0, dtype=tf.int64)  # the tutorial's num_updates
    ema = tf.train.ExponentialMovingAverage(0.9999, num_updates=global_step)
    ema.apply(trainable)  # creates the shadow variables, outside the tf.function

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = inference(v, images)
            cross_entropy = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
            decay = 0.004 * (tf.nn.l2_loss(v["local3/weights"]) + tf.nn.l2_loss(v["local4/weights"]))
            loss = cross_entropy + decay
        for var, grad in zip(trainable, tape.gradient(loss, trainable)):
            var.assign_sub(0.1 * grad)
        global_step.assign_add(1)
        ema.apply(trainable)
        return loss

    if args.input == "real":
        batches = real_batches(args.data_dir, args.batch)
    else:
        fixed = (tf.random.normal([args.batch, 24, 24, 3]), tf.random.uniform([args.batch], 0, 10, tf.int32))
        batches = iter(lambda: fixed, None)

    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        images, labels = next(batches)
        train_step(images, labels).numpy()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    report(f"TensorFlow {tf.__version__}", args, times)


if __name__ == "__main__":
    main()
