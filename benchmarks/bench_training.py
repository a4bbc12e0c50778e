"""Child-training throughput: the evaluator's loop against a plain hand-written PyTorch loop.

Both loops train the same child (same architecture, same seeded initial weights) on the same
device-resident data with the same recipe (SGD Nesterov, cosine schedule, batch size, channels_last, bf16
autocast on CUDA). The plain loop is the minimum a careful user would write; the evaluator's loop
(:func:`ma2ml_env.training.fit`) adds augmentation planning, extras, hooks, divergence and time-limit
checks. The ratio of their throughputs is the overhead of our loop (goal: <= 5%).

Reported: images/s, seconds per step, model FLOPs utilisation ``MFU = 3 * forward_FLOPs_per_image *
images_per_s / peak`` (DESIGN.md section 6; ``--peak`` defaults to 989e12, H100 dense bf16, on CUDA and is
not reported on the CPU unless given), the evaluator/plain ratio, and the wall time of one default-settings
evaluation (``TrainEvaluator()`` on ``Pipeline()``, digits).

Usage::

    python benchmarks/bench_training.py                                  # digits, CPU
    python benchmarks/bench_training.py --dataset synthetic --device cuda  # CIFAR-shaped 50k images, GPU
    python benchmarks/bench_training.py --policy                         # evaluator loop with a 5x2 policy
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ma2ml_env.data import load_dataset
from ma2ml_env.models import build_model
from ma2ml_env.pipeline import AugOp, Pipeline
from ma2ml_env.rewards.train import TrainEvaluator, resolve_device
from ma2ml_env.training import fit, lr_factor, resize_images


def plain_loop(model, x, y, mean, std, *, batch_size, steps, lr, wd, seed, channels_last, amp):
    """The hand-written baseline: gather, normalise, forward, loss, backward, step. Returns seconds."""
    device = x.device
    m = torch.tensor(mean, device=device)[None, :, None, None]
    s = torch.tensor(std, device=device)[None, :, None, None]
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=wd,
                          fused=device.type == "cuda" or None)
    gen = torch.Generator().manual_seed(seed)
    n = y.shape[0]
    per_epoch = n // batch_size
    model.train()
    step = 0
    t0 = time.perf_counter()
    while step < steps:
        perm = torch.randperm(n, generator=gen).to(device, non_blocking=True)
        for b in range(per_epoch):
            if step >= steps:
                break
            idx = perm[b * batch_size : (b + 1) * batch_size]
            xb = (x[idx].float() / 255.0 - m) / s
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = lr * lr_factor(step, steps, 0, "cosine")
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                out = model(xb)
            loss = F.cross_entropy(out.float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("digits", "synthetic"), default="digits")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 128 (digits), 512 (synthetic)")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--epochs", type=float, default=None, help="passes per timed run (default 2 digits, 1 synthetic)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per loop (best and median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    ap.add_argument("--peak", type=float, default=None, help="peak FLOP/s for MFU (default 989e12 on CUDA)")
    ap.add_argument("--policy", action="store_true", help="give the evaluator's loop a 5x2 AutoAugment policy")
    ap.add_argument("--no-default-eval", action="store_true", help="skip the default-settings evaluation timing")
    args = ap.parse_args()

    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    synthetic = args.dataset == "synthetic"
    bs = args.batch_size or (512 if synthetic else 128)
    epochs = args.epochs or (1.0 if synthetic else 2.0)
    peak = args.peak if args.peak is not None else (989e12 if device.type == "cuda" else None)
    spec = {"name": "synthetic", "size": 50_000, "shape": (3, 32, 32)} if synthetic else "digits"
    data = load_dataset(spec).to(device)
    x = resize_images(data.train_x, args.resolution)
    y = data.train_y
    pipe = Pipeline().with_arch(resolution=args.resolution).with_train(batch_size=bs, lr=0.05, epochs=1)
    if args.policy:
        ops = ("Rotate", "Color", "ShearX", "Equalize", "TranslateY", "Cutout", "Contrast", "Posterize", "Invert",
               "Sharpness")
        pipe = pipe.replace(augment=tuple((AugOp(ops[2 * i], 0.6, 5), AugOp(ops[2 * i + 1], 0.4, 3))
                                          for i in range(5)))
    steps = max(1, int(epochs * (len(y) // bs)))
    flops = pipe.arch.flops(data.channels, data.num_classes)
    amp = device.type == "cuda"

    def new_model():
        m = build_model(pipe.arch, data.channels, data.num_classes, generator=torch.Generator().manual_seed(0))
        return m.to(device).to(memory_format=torch.channels_last)

    def run_plain():
        return plain_loop(new_model(), x, y, data.mean, data.std, batch_size=bs, steps=steps, lr=0.05, wd=5e-4,
                          seed=0, channels_last=True, amp=amp)

    def run_ours():
        scale = steps / (len(y) // bs)  # the same number of steps
        st = fit(new_model(), pipe, x, y, num_classes=data.num_classes, mean=data.mean, std=data.std, seed=0,
                 epoch_scale=scale, channels_last=True, amp=amp)
        assert st.steps == steps, (st.steps, steps)
        return st.seconds

    run_plain()
    run_ours()  # warm-up (kernel selection, allocator)
    plain, ours = [], []
    for _ in range(args.repeats):  # interleaved, so that machine-load drift hits both alike
        plain.append(run_plain())
        ours.append(run_ours())
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"threads={torch.get_num_threads()}), dataset={args.dataset} ({len(y)} train images), "
          f"arch={pipe.arch}, forward MFLOPs/image={flops / 1e6:.2f}, batch={bs}, steps={steps}"
          f"{', policy=5x2' if args.policy else ''}")
    # best-of-N is the robust estimate of a loop's own cost on a shared machine (load only adds time)
    rows = []
    for name, times in (("plain PyTorch", plain), ("evaluator fit()", ours)):
        t = min(times)
        ips = steps * bs / t
        mfu = f"{3 * flops * ips / peak:.2%}" if peak else "n/a"
        rows.append((ips, steps * bs / statistics.median(times)))
        print(f"  {name:<16} {ips:10.0f} images/s  {t / steps * 1e3:8.2f} ms/step  MFU {mfu}  "
              f"(best of {len(times)}; runs: {', '.join(f'{v:.2f}s' for v in times)})")
    best, med = rows[1][0] / rows[0][0], rows[1][1] / rows[0][1]
    print(f"  evaluator/plain throughput ratio: {best:.3f} best-of-N (overhead {1 - best:+.1%}), {med:.3f} median")

    if not args.no_default_eval:
        ev = TrainEvaluator(device="cpu")  # the defaults a user gets with reward="train"
        ev.evaluate_pipeline(Pipeline().with_train(epochs=1), 0)  # loads the data, caches the 32x32 copy
        times, results = [], []
        for seed in range(args.repeats):
            t0 = time.perf_counter()
            results.append(ev.evaluate_pipeline(Pipeline(), seed))
            times.append(time.perf_counter() - t0)
        r = results[0]
        print(f"default settings (TrainEvaluator() on Pipeline(), digits, CPU, {ev.num_threads} thread): "
              f"{statistics.median(times):.2f} s per evaluation (runs: {', '.join(f'{v:.2f}' for v in times)}), "
              f"{r.info['train_seconds'] / r.info['steps'] * 1e3:.1f} ms per step, {r.info['steps']} steps, "
              f"val accuracy {statistics.mean(q.accuracy for q in results):.3f}")


if __name__ == "__main__":
    main()
