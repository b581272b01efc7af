#!/usr/bin/env python3
"""Rebuild an mtcool model in PyTorch from its model.safetensors alone and load it with strict=True
(docs/checkpoint.md). Families: MultiLeNet and U-Net extractors; Independent, Joint (and the gradient
combiners, which train the Joint model) and MT-CooL with concat or add fusion. MTAN, CTAN and MT-CooL's
attention fusion have more modules (their names are in docs/checkpoint.md) and are not rebuilt here.

    python scripts/load_in_pytorch.py runs/x/model.safetensors [image.ppm]

Prints the model's tasks and, given a binary PGM/PPM image, every task's logits (prepared as
`mtcool.inputs` says).
"""
import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from torch_ref import UNet  # noqa: E402  (mtcool's U-Net extractor, shared with the benchmark)


class LeNet(nn.Module):
    def __init__(self, w, p):
        super().__init__()
        self.conv1 = nn.Conv2d(*w[f"{p}.conv1.weight"].shape[1::-1][:2], 5)
        self.conv2 = nn.Conv2d(*w[f"{p}.conv2.weight"].shape[1::-1][:2], 5)
        self.fc = nn.Linear(*w[f"{p}.fc.weight"].shape[::-1])

    def forward(self, x):  # [B, 1, 28, 28] -> [B, d, 1, 1]: features are a 1×1 map
        h = F.relu(F.max_pool2d(self.conv1(x), 2))
        h = F.relu(F.max_pool2d(self.conv2(h), 2))
        return F.relu(self.fc(h.flatten(1)))[:, :, None, None]


class Head(nn.Module):
    """Segmentation: a 1×1 conv. Classification: fc1 → ReLU → fc2 on the spatially averaged features."""

    def __init__(self, w, p):
        super().__init__()
        self.segment = f"{p}.conv.weight" in w
        if self.segment:
            co, ci = w[f"{p}.conv.weight"].shape[:2]
            self.conv = nn.Conv2d(ci, co, 1)
        else:
            self.fc1 = nn.Linear(*w[f"{p}.fc1.weight"].shape[::-1])
            self.fc2 = nn.Linear(*w[f"{p}.fc2.weight"].shape[::-1])

    def forward(self, z):
        if self.segment:
            return self.conv(z)
        return self.fc2(F.relu(self.fc1(z.mean((2, 3)))))


class MtcoolModel(nn.Module):
    def __init__(self, path):
        super().__init__()
        w = load_file(path)
        with safe_open(path, "pt") as f:
            meta = f.metadata()
        self.cfg = json.loads(meta["mtcool.model"])
        self.inputs = json.loads(meta["mtcool.inputs"]) if "mtcool.inputs" in meta else None
        method, fusion = self.cfg["method"], self.cfg["fusion"]
        if method in ("mtan", "ctan") or (method == "mtcool" and fusion == "attention"):
            sys.exit(f"{method}/{fusion}: not rebuilt by this script (see docs/checkpoint.md)")
        n = len(self.cfg["tasks"])
        Ext = UNet if "unet" in json.dumps(self.cfg["arch"]).lower() else LeNet
        self.is_shared = method in ("joint", "pcgrad", "cagrad", "mgda", "graddrop")
        self.mode = "shared" if self.is_shared else ("own" if method == "independent" else fusion)
        prefixes = ["shared"] if self.is_shared else [f"task{t + 1}" for t in range(n)]
        for p in prefixes:
            sub = getattr(self, p, None) or nn.Module()
            sub.extractor = Ext(w, f"{p}.extractor")
            setattr(self, p, sub)
        for t in range(n):
            sub = getattr(self, f"task{t + 1}", None) or nn.Module()
            sub.head = Head(w, f"task{t + 1}.head")
            setattr(self, f"task{t + 1}", sub)
        self.n = n
        self.load_state_dict(w, strict=True)

    def forward(self, x):
        if self.is_shared:
            z = self.shared_module().extractor(x)
            return [getattr(self, f"task{t + 1}").head(z) for t in range(self.n)]
        feats = [getattr(self, f"task{t + 1}").extractor(x) for t in range(self.n)]
        if self.mode == "own":
            zs = feats
        elif self.mode == "add":
            zs = [sum(feats)] * self.n
        else:  # concat: every head reads [F1, ..., FT], task 1's features first
            zs = [torch.cat(feats, 1)] * self.n
        return [getattr(self, f"task{t + 1}").head(z) for t, z in enumerate(zs)]

    def shared_module(self):
        return getattr(self, "shared")


def read_pnm(path):
    """A binary 8-bit PGM (P5) or PPM (P6) image as an [H, W, C] uint8 array."""
    import numpy as np

    data = open(path, "rb").read()
    fields, pos = [], 0
    while len(fields) < 4:  # magic, width, height, maxval, separated by whitespace
        while data[pos : pos + 1].isspace():
            pos += 1
        start = pos
        while not data[pos : pos + 1].isspace():
            pos += 1
        fields.append(data[start:pos])
    magic, w, h = fields[0], int(fields[1]), int(fields[2])
    c = {b"P5": 1, b"P6": 3}[magic]
    return np.frombuffer(data[pos + 1 : pos + 1 + w * h * c], np.uint8).reshape(h, w, c)


def prepare(path, inputs):
    """The image at `path` (binary PGM/PPM) as the model's input, as `mtcool.inputs` says. Only the
    nearest-exact resize is done here; give bilinear models images of their input size."""
    import numpy as np

    a = read_pnm(path)
    h, w = inputs["height"], inputs["width"]
    assert a.shape[2] == inputs["channels"], f"the model takes {inputs['channels']} channel(s)"
    if a.shape[:2] != (h, w):
        assert inputs["resize"] == "nearest-exact", "resize bilinear models' images to their input size first"
        ys = ((2 * np.arange(h) + 1) * a.shape[0]) // (2 * h)  # src = floor((dst + 0.5) * in / out)
        xs = ((2 * np.arange(w) + 1) * a.shape[1]) // (2 * w)
        a = a[ys][:, xs]
    x = (a.astype(np.float32) / np.float32(255.0) - np.array(inputs["mean"], np.float32)) / np.array(inputs["std"], np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())[None]


if __name__ == "__main__":
    model = MtcoolModel(sys.argv[1]).eval()
    print("loaded with strict=True:", model.cfg["method"], [t for t in model.cfg["tasks"]])
    if len(sys.argv) > 2:
        with torch.no_grad():
            for t, l in enumerate(model(prepare(sys.argv[2], model.inputs))):
                print(f"task {t + 1}: logits {tuple(l.shape)}", l.flatten()[:10].tolist())
