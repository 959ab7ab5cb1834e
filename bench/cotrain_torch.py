"""The co-training step of scrim train in PyTorch (the CPU by default), for `scrim bench --torch`.

Same networks as models/train/src/nets/ (perturber: hidden 3x3 convs + ReLU, a 3x3 sigma head,
sigma = sigma_max * sigmoid; recognizer: [3x3 conv -> BatchNorm -> ReLU -> 2x2 max-pool] per
width, global average pool, linear), the same step as models/train/src/cotrain/step.rs (Gaussian noise,
clip, 8-bit rounding with a straight-through gradient, CE - lambda * mean(log sigma), Adam on
both networks). Written from that description, not from another project.

Usage: python cotrain_torch.py STEPS BATCH SIZE CHANNELS HIDDEN WIDTHS(comma) CLASSES [LAYERS [DEVICE]]
LAYERS: comma-separated IN:OUT:SIDE 3x3 convolutions to time alone, forward and backward (input
and weight gradients) at the same batch size (may be empty). DEVICE: a torch device, `cpu` by
default (`cuda` for `scrim bench --backend wgpu --torch-device cuda`); every timed step ends in
`.item()`, which waits for the device.
Prints JSON: {"median_step_ms": m, "images_per_sec": r, "threads": t, "version": v,
"layers_ms": [m, ...]}.
"""

import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Perturber(nn.Module):
    def __init__(self, channels, hidden, sigma_max=1.0, head_bias=-2.0):
        super().__init__()
        layers, cin = [], 3
        for _ in range(hidden):
            layers.append(nn.Conv2d(cin, channels, 3, padding=1))
            cin = channels
        self.hidden = nn.ModuleList(layers)
        self.head = nn.Conv2d(cin, 3, 3, padding=1)
        nn.init.constant_(self.head.bias, head_bias)
        self.sigma_max = sigma_max

    def forward(self, x):
        for conv in self.hidden:
            x = F.relu(conv(x))
        z = self.head(x)
        return self.sigma_max * torch.sigmoid(z), F.logsigmoid(z) + torch.log(
            torch.tensor(self.sigma_max)
        )


class Recognizer(nn.Module):
    def __init__(self, widths, classes):
        super().__init__()
        blocks, cin = [], 3
        for w in widths:
            blocks.append(nn.Sequential(nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w)))
            cin = w
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        for b in self.blocks:
            x = F.max_pool2d(F.relu(b(x)), 2)
        return self.fc(x.mean(dim=(2, 3)))


def median_ms(fn, steps):
    """Median wall time of `fn` in ms over `steps` runs, after three unmeasured ones."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


def time_conv(batch, cin, cout, side, steps, device):
    """Median ms of one 3x3 convolution's forward and backward (input and weight gradients)."""
    conv = nn.Conv2d(cin, cout, 3, padding=1).to(device)
    x = torch.rand(batch, cin, side, side, device=device, requires_grad=True)

    def once():
        conv.zero_grad()
        x.grad = None
        conv(x).sum().backward()
        return x.grad.sum().item() + conv.weight.grad.sum().item()

    return median_ms(once, steps)


def main():
    steps, batch, size, channels, hidden = (int(v) for v in sys.argv[1:6])
    widths = [int(v) for v in sys.argv[6].split(",")]
    classes = int(sys.argv[7])
    device = torch.device(sys.argv[9] if len(sys.argv) > 9 else "cpu")
    torch.manual_seed(0)
    p, c = Perturber(channels, hidden).to(device), Recognizer(widths, classes).to(device)
    opt_p = torch.optim.Adam(p.parameters(), lr=4e-3)
    opt_c = torch.optim.Adam(c.parameters(), lr=2e-3)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    lam = 0.05

    def step():
        sigma, log_sigma = p(x)
        noisy = torch.clamp(x + sigma * torch.randn_like(x), 0.0, 1.0)
        q = torch.round(noisy * 255.0) / 255.0
        xp = noisy + (q - noisy).detach()
        logits = c(xp)
        loss = F.cross_entropy(logits, y) - lam * log_sigma.mean()
        opt_p.zero_grad()
        opt_c.zero_grad()
        loss.backward()
        opt_p.step()
        opt_c.step()
        return loss.item()

    median = median_ms(step, steps)
    specs = sys.argv[8].split(",") if len(sys.argv) > 8 and sys.argv[8] else []
    layers = [tuple(int(v) for v in spec.split(":")) for spec in specs]
    print(
        json.dumps(
            {
                "median_step_ms": median,
                "images_per_sec": batch / (median / 1e3),
                "threads": torch.get_num_threads(),
                "version": torch.__version__,
                "device": str(device),
                "layers_ms": [
                    time_conv(batch, cin, cout, side, steps, device) for cin, cout, side in layers
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
