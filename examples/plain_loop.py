"""Measure a plain PyTorch training loop with energybench.Tracker (offline, a tiny model, seconds on a CPU).

    python examples/plain_loop.py [--output-dir runs/plain-loop-example]
    energybench report runs/plain-loop-example

Two windows, ``train`` and ``eval``; ``s.reading()`` prints the figures so far without closing the window.
``model`` and ``loss_fn`` enable the deterministic accounting (mem_model_bytes by parts, FLOPs per step).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import energybench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output-dir", default="runs/plain-loop-example")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))
    x, y = torch.randn(256, 16), torch.randn(256, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_fn(m: nn.Module) -> torch.Tensor:
        return nn.functional.mse_loss(m(x[:32]), y[:32])

    with energybench.Tracker(output_dir=args.output_dir, label="mlp-full-ft", model=model, loss_fn=loss_fn) as s:
        with s.window("train"):
            for step in range(args.steps):
                i = (step * 32) % 256
                loss = nn.functional.mse_loss(model(x[i:i + 32]), y[i:i + 32])
                loss.backward()
                opt.step()
                opt.zero_grad()
                if step == args.steps // 2:
                    so_far = s.reading()["train"]
                    print(f"halfway: {so_far['wall_s']:.3f} s, energy so far {so_far.get('energy_kwh')} kWh")
        with s.window("eval"):
            with torch.no_grad():
                val = nn.functional.mse_loss(model(x), y).item()
        s.fields["metrics"] = {"val_mse": val}
    print(f"row written to {s.results_path} (status {s.row.status}, train {s.row.windows['train']['wall_s']:.3f} s); "
          f"see it with: energybench report {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
