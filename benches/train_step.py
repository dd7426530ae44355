"""The CIFAR-10 tutorial CNN's training step in PyTorch, for benches/train_step.rs.

Same model and recipe as the tch trainer: conv5x5-64, relu, max-pool 3x3/2 SAME (padding
-inf at the end), LRN (TensorFlow's alpha 0.001/9 per summed square is PyTorch's alpha
0.001 over size 9), conv, relu, LRN, pool, fc384, fc192, fc10; mean cross-entropy plus
0.004 * 1/2 |W|^2 on local3/local4; plain SGD; moving average of every weight.

Inputs (--input):
  fixed  one random batch, reused (compute only);
  real   the tutorial's distortions on the CIFAR-10 binary files in --data-dir (random 24x24
         crop, left-right flip, brightness +-63, contrast 0.2-1.8 around each channel's mean,
         per-image standardisation), shuffled, made by a DataLoader with one worker process
         (as our trainer's one input thread); a step's time includes waiting for its batch.

--device cpu|cuda|cuda:N runs the model there (cuDNN autotuned, as the tch trainer's
default); batches go to it from pinned memory without blocking, and each step ends with
`loss.item()`, which waits for the device.

Prints one JSON line: {"framework", "input", "threads", "batch", "device", "step_seconds": [...]}.
Run: .venv/bin/python benches/train_step.py --steps 20 --threads 2 [--input real --data-dir DIR] [--device cuda:0]
"""

import glob
import os
import time

from train_step_flags import parse_args, report

import numpy as np

import torch
import torch.nn.functional as F


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 64, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(64, 64, 5, padding=2)
        self.local3 = torch.nn.Linear(64 * 6 * 6, 384)
        self.local4 = torch.nn.Linear(384, 192)
        self.softmax_linear = torch.nn.Linear(192, 10)
        for layer, std in [(self.conv1, 5e-2), (self.conv2, 5e-2), (self.local3, 0.04), (self.local4, 0.04), (self.softmax_linear, 1 / 192)]:
            torch.nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
        for layer, value in [(self.conv1, 0.0), (self.conv2, 0.1), (self.local3, 0.1), (self.local4, 0.1), (self.softmax_linear, 0.0)]:
            torch.nn.init.constant_(layer.bias, value)

    @staticmethod
    def pool(x):
        # TensorFlow SAME for 3x3/2 on even sides: one padded row/column at the end, never winning.
        return F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)

    @staticmethod
    def lrn(x):
        return F.local_response_norm(x, size=9, alpha=0.001, beta=0.75, k=1.0)

    def forward(self, x):
        x = self.lrn(self.pool(F.relu(self.conv1(x))))
        x = self.pool(self.lrn(F.relu(self.conv2(x))))
        x = F.relu(self.local3(x.flatten(1)))
        x = F.relu(self.local4(x))
        return self.softmax_linear(x)


class DistortedCifar(torch.utils.data.Dataset):
    """The training records of the CIFAR-10 binary files, distorted as the tutorial does."""

    def __init__(self, data_dir):
        files = sorted(glob.glob(os.path.join(data_dir, "data_batch_*.bin")))
        if not files:
            raise SystemExit(f"no data_batch_*.bin in {data_dir}")
        records = np.concatenate([np.fromfile(f, np.uint8).reshape(-1, 3073) for f in files])
        self.labels = torch.from_numpy(records[:, 0].astype(np.int64))
        self.images = torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy())

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        top, left = np.random.randint(0, 9, size=2)
        x = self.images[i, :, top:top + 24, left:left + 24].float()
        if np.random.rand() < 0.5:
            x = x.flip(2)
        x = x + float(np.random.uniform(-63, 63))
        mean = x.mean(dim=(1, 2), keepdim=True)
        x = (x - mean) * float(np.random.uniform(0.2, 1.8)) + mean
        x = (x - x.mean()) / max(x.std(unbiased=False).item(), 1 / np.sqrt(x.numel()))
        return x, self.labels[i]


def batches(args):
    """Endless (images, labels) batches: the fixed one, or the real pipeline's."""
    if args.input == "fixed":
        images = torch.randn(args.batch, 3, 24, 24, device=args.device)
        labels = torch.randint(0, 10, (args.batch,), device=args.device)
        while True:
            yield images, labels
    loader = torch.utils.data.DataLoader(DistortedCifar(args.data_dir), batch_size=args.batch, shuffle=True,
                                         drop_last=True, num_workers=1, persistent_workers=True, prefetch_factor=4,
                                         pin_memory=args.device != "cpu")
    while True:
        yield from loader


def main():
    args = parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    net = Net().to(device)
    params = list(net.parameters())
    shadow = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=0.1)
    inputs = batches(args)

    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        images, labels = next(inputs)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        logits = net(images)
        loss = F.cross_entropy(logits, labels)
        loss = loss + 0.004 * 0.5 * (net.local3.weight.square().sum() + net.local4.weight.square().sum())
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            decay = min(0.9999, (1 + step) / (10 + step))
            for s, p in zip(shadow, params):
                s.sub_((1 - decay) * (s - p))
        loss.item()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    report(f"PyTorch {torch.__version__}", args, times)


if __name__ == "__main__":
    main()
