#!/usr/bin/env python3
"""The MultiMNIST and fundus training steps of mtcool in PyTorch, for cross-checking and timing against
`mtcool bench` (fundus: the U-Net extractors, a 1×1-conv segmentation head with cross-entropy + soft Dice,
a pooled classification head with the class weights `mtcool bench --save` stored).

Reads a folder written by `mtcool bench --save DIR` (model.safetensors: the initial weights under mtcool's
names; batch.safetensors: x, labels1, labels2; bench.json: the method, mode, b, losses of the first steps),
rebuilds the same model (MultiLeNet extractors and heads, PyTorch layouts), and then

  --check   runs the first steps from the same weights on the same batch and compares both tasks' losses
            with mtcool's (exact up to float rounding for vanilla MT-CooL and Joint; with noise the two
            engines draw different ε, so the tolerance is wider);
  --time    times the step, eager and under torch.compile, median of --steps after --warmup, and prints
            one JSON object.

Methods: mtcool (vanilla | noreg | full: noise U(-b, b) on the other extractor, b-box on the own one),
joint (shared extractor, summed loss). Optimiser: Adam (PyTorch's), one per task for MT-CooL, which
matches mtcool's per-parameter Adam state.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class Extractor(nn.Module):
    def __init__(self, c1, c2, d):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.fc = nn.Linear(c2 * 16, d)

    def forward(self, x):
        h = F.relu(F.max_pool2d(self.conv1(x), 2))
        h = F.relu(F.max_pool2d(self.conv2(h), 2))
        return F.relu(self.fc(h.flatten(1)))


class UNet(nn.Module):
    """mtcool's fundus extractor (src/model/unet.rs): 3×3 'same' convs, max-pool, nearest upsampling."""

    def __init__(self, w, prefix):
        super().__init__()
        for name in ("enc0", "enc1", "mid0", "mid1", "dec1", "dec0"):
            co, ci = w[f"{prefix}.{name}.weight"].shape[:2]
            setattr(self, name, nn.Conv2d(ci, co, 3, padding=1))

    def forward(self, x):
        e0 = F.relu(self.enc0(x))
        e1 = F.relu(self.enc1(F.max_pool2d(e0, 2)))
        m = F.relu(self.mid1(F.relu(self.mid0(F.max_pool2d(e1, 2)))))
        d1 = F.relu(self.dec1(torch.cat([F.interpolate(m, scale_factor=2, mode="nearest"), e1], 1)))
        return F.relu(self.dec0(torch.cat([F.interpolate(d1, scale_factor=2, mode="nearest"), e0], 1)))


class SegHead(nn.Module):
    def __init__(self, din, classes):
        super().__init__()
        self.conv = nn.Conv2d(din, classes, 1)

    def forward(self, z):
        return self.conv(z)


class PoolHead(nn.Module):
    def __init__(self, din, hidden, classes):
        super().__init__()
        self.fc1 = nn.Linear(din, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, z):
        return self.fc2(F.relu(self.fc1(z.mean((2, 3)))))


def seg_loss(logits, labels, eps=1.0):
    """Cross-entropy plus multi-class soft Dice, as mtcool's segmentation loss (mtl::task_loss)."""
    ce = F.cross_entropy(logits, labels)
    p = logits.softmax(1)
    t = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    dims = (0, 2, 3)
    dice = ((2 * (p * t).sum(dims) + eps) / (p.sum(dims) + t.sum(dims) + eps)).mean()
    return ce + (1 - dice)


class Head(nn.Module):
    def __init__(self, din, hidden, classes):
        super().__init__()
        self.fc1 = nn.Linear(din, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, z):
        return self.fc2(F.relu(self.fc1(z)))


def build(weights, method):
    """Modules named like mtcool's parameters (`task1.extractor.conv1.weight`, ...), loaded from them."""
    ext_names = ["shared"] if method == "joint" else ["task1", "task2"]
    w = weights
    ex = {}
    unet = "task1.head.conv.weight" in w
    for n in ext_names:
        if unet:
            ex[n] = UNet(w, f"{n}.extractor")
            continue
        c1 = w[f"{n}.extractor.conv1.weight"].shape[0]
        c2 = w[f"{n}.extractor.conv2.weight"].shape[0]
        d = w[f"{n}.extractor.fc.weight"].shape[0]
        ex[n] = Extractor(c1, c2, d)
    heads = []
    for t in (1, 2):
        if unet and f"task{t}.head.conv.weight" in w:
            co, din = w[f"task{t}.head.conv.weight"].shape[:2]
            heads.append(SegHead(din, co))
        elif unet:
            h, din = w[f"task{t}.head.fc1.weight"].shape
            heads.append(PoolHead(din, h, w[f"task{t}.head.fc2.weight"].shape[0]))
        else:
            h, din = w[f"task{t}.head.fc1.weight"].shape
            heads.append(Head(din, h, w[f"task{t}.head.fc2.weight"].shape[0]))
    root = nn.Module()
    for n, m in ex.items():
        sub = nn.Module()
        sub.extractor = m
        setattr(root, n, sub)
    for t, h in enumerate(heads, 1):
        sub = getattr(root, f"task{t}", None) or nn.Module()
        sub.head = h
        setattr(root, f"task{t}", sub)
    missing, unexpected = root.load_state_dict(w, strict=True)
    assert not missing and not unexpected
    return root, [ex[n] for n in ext_names], heads


class MtCoolStep:
    """One MT-CooL outer iteration: task 1 then task 2 (DESIGN.md §1), K = 1, one inner step."""

    def __init__(self, exts, heads, lr, b, mode):
        self.exts, self.heads, self.b, self.mode = exts, heads, b, mode
        self.opts = [
            torch.optim.Adam(list(exts[t].parameters()) + list(heads[t].parameters()), lr=lr) for t in (0, 1)
        ]
        self.loss_fns = [self._loss_fn(0), self._loss_fn(1)]

    def _loss_fn(self, t):
        own, other, head = self.exts[t], self.exts[1 - t], self.heads[t]
        noisy = self.mode != "vanilla"
        b = self.b

        def loss(x, y):
            with torch.no_grad():
                params = dict(other.named_parameters())
                if noisy:
                    params = {k: v + (torch.rand_like(v) * 2 - 1) * b for k, v in params.items()}
                f_other = torch.func.functional_call(other, params, (x,))
            f_own = own(x)
            z = torch.cat([f_own, f_other] if t == 0 else [f_other, f_own], 1)
            return task_loss(head, head(z), y)

        return loss

    def compile(self):
        self.loss_fns = [torch.compile(f) for f in self.loss_fns]

    def __call__(self, x, ys):
        losses = []
        for t in (0, 1):
            own = list(self.exts[t].parameters())
            snap = [p.detach().clone() for p in own] if self.mode == "full" else None
            loss = self.loss_fns[t](x, ys[t])
            self.opts[t].zero_grad(set_to_none=True)
            loss.backward()
            self.opts[t].step()
            if snap is not None:
                with torch.no_grad():
                    for p, s in zip(own, snap):
                        p.copy_(torch.minimum(torch.maximum(p, s - self.b), s + self.b))
            losses.append(loss.detach())
        return [float(l) for l in losses]


class JointStep:
    """Hard parameter sharing: L1 + L2, one backward, Adam over everything."""

    def __init__(self, ext, heads, lr):
        self.ext, self.heads = ext, heads
        params = list(ext.parameters()) + [p for h in heads for p in h.parameters()]
        self.opt = torch.optim.Adam(params, lr=lr)
        self.loss_fn = self._loss

    def _loss(self, x, y1, y2):
        z = self.ext(x)
        return task_loss(self.heads[0], self.heads[0](z), y1), task_loss(self.heads[1], self.heads[1](z), y2)

    def compile(self):
        self.loss_fn = torch.compile(self._loss)

    def __call__(self, x, ys):
        l1, l2 = self.loss_fn(x, ys[0], ys[1])
        self.opt.zero_grad(set_to_none=True)
        (l1 + l2).backward()
        self.opt.step()
        return [float(l1.detach()), float(l2.detach())]


CLASS_WEIGHTS = {}  # head → class weights of its cross-entropy (from batch.safetensors, if saved)


def task_loss(head, logits, y):
    return seg_loss(logits, y) if isinstance(head, SegHead) else F.cross_entropy(logits, y, CLASS_WEIGHTS.get(head))


def make_step(folder, compiled=False, device="cpu"):
    bench = json.loads((folder / "bench.json").read_text())
    cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    weights = load_file(folder / "model.safetensors")
    batch = load_file(folder / "batch.safetensors")
    x = batch["x"].to(device)
    n, _, h, w = x.shape
    # Segmentation labels are stored flat, one per pixel in (n, h, w) order.
    ys = [batch[k].long().reshape((n, h, w) if batch[k].numel() == n * h * w else (n,)).to(device) for k in ("labels1", "labels2")]
    root, exts, heads = build(weights, bench["method"])
    root.to(device)
    for t, head in enumerate(heads, 1):
        if f"class_weights{t}" in batch:
            CLASS_WEIGHTS[head] = batch[f"class_weights{t}"].to(device)
    lr, b = bench["lr"], bench["b"]
    if bench["method"] == "mtcool":
        step = MtCoolStep(exts, heads, lr, b, bench["mode"])
    elif bench["method"] == "joint":
        step = JointStep(exts[0], heads, lr)
    else:
        sys.exit(f"torch_ref: no PyTorch version of method {bench['method']}")
    if compiled:
        step.compile()
    return bench, step, x, ys


def check(folder, tol, device):
    bench, step, x, ys = make_step(folder, device=device)
    worst = 0.0
    for i, want in enumerate(bench["first_losses"]):
        got = step(x, ys)
        for g, w in zip(got, want):
            worst = max(worst, abs(g - w) / max(abs(w), 1e-12))
        print(f"step {i + 1}: torch {got[0]:.6f} {got[1]:.6f}   mtcool {want[0]:.6f} {want[1]:.6f}")
    ok = worst <= tol
    print(f"max relative loss difference {worst:.2e} (tolerance {tol:.0e}): {'ok' if ok else 'FAIL'}")
    return ok


def time_steps(folder, compiled, warmup, steps, device):
    bench, step, x, ys = make_step(folder, compiled, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step(x, ys)
    sync()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step(x, ys)  # the loss values read back as floats synchronise the step
        sync()
        times.append((time.perf_counter() - t) * 1e6)
    med = statistics.median(times)
    return {
        "engine": "torch.compile" if compiled else "torch eager",
        "median_us": med,
        "images_per_s": x.shape[0] / (med * 1e-6),
        "warmup_s": warm_s,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="a folder written by `mtcool bench --save`")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--time", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also time under torch.compile")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: bench.json's)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = ap.parse_args()
    bench = json.loads((a.folder / "bench.json").read_text())
    torch.manual_seed(0)
    torch.set_num_threads(a.threads or bench["threads"])
    ok = True
    if a.check:
        ok = check(a.folder, a.tol, a.device)
    if a.time:
        rows = [time_steps(a.folder, False, a.warmup, a.steps, a.device)]
        if a.compile:
            try:
                rows.append(time_steps(a.folder, True, a.warmup, a.steps, a.device))
            except Exception as e:  # report, do not hide: the table says compile failed and why
                rows.append({"engine": "torch.compile", "error": str(e).splitlines()[0][:200]})
        dev = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
        print(json.dumps({"torch": torch.__version__, "device": dev, "threads": torch.get_num_threads(), "rows": rows}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
