"""How much arithmetic precision the zero-order estimator needs: the cosine between a ZO estimate
and the exact gradient when the API's scores carry rounding of a given relative size.

The profiles' mu = 0.005 on unit directions over d = 3072 pixels moves the loss by ~1e-4, so the
API's forward must be accurate well below that. Rows: IEEE float32 (the reference), then the
scores multiplied by (1 + e * N(0, 1)) for relative errors e around TensorFloat-32's unit
roundoff (2^-11 = 4.9e-4) and bfloat16's (2^-8 = 3.9e-3). On CUDA it also times the same estimate with cuDNN's TF32 convolutions
on and off (what `dfml_bench.runner.exact_float32` turns off for every run).

    python benchmarks/zo_rounding.py                  # CPU: the simulated rounding
    python benchmarks/zo_rounding.py --device cuda    # and real TF32 vs IEEE convolutions
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from dfml_bench.apis import APIInfo, QueryLedger, make_api
from dfml_bench.runner import exact_float32
from dfml_plugins.estimators.zeroth_order import ZOParams
from dfml_plugins.estimators.zeroth_order.estimator import WhiteBoxGradient, ZOForward


def conv_api(device: str):
    """A small conv network at 32 px (d = 3072) as a white-box API, so the exact gradient exists."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                        nn.Flatten(), nn.Linear(32, 5)).to(device)
    info = APIInfo("conv", "toy", "conv", (0, 1, 2, 3, 4), tuple("abcde"), 32)
    return make_api(net, info, (0.5,) * 3, (0.5,) * 3, QueryLedger(), white_box=True)


def cosine(api, x: torch.Tensor, y: torch.Tensor, q: int, mu: float, noise: float) -> float:
    gen = torch.Generator(device=x.device).manual_seed(2)

    def clean(_x: torch.Tensor, scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scores, y[index], reduction="none")

    def rounded(_x: torch.Tensor, scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        scores = scores * (1 + noise * torch.randn(scores.shape, device=scores.device, generator=gen))
        return clean(_x, scores, index)

    exact = WhiteBoxGradient().estimate(api, x, clean).grad
    zo = ZOForward(ZOParams(q=q, mu=mu), seed=0).estimate(api, x, rounded if noise else clean).grad
    return F.cosine_similarity(zo.flatten(1), exact.flatten(1)).mean().item()


def main(argv: list[str] | None = None) -> list[dict[str, float | str]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--q", type=int, default=1000)
    ap.add_argument("--mu", type=float, default=0.005)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    x = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(dev)
    y = torch.arange(args.batch, device=dev) % 5
    expected = (args.q / (args.q + 3 * 32 * 32)) ** 0.5
    print(f"device={dev} q={args.q} mu={args.mu} B={args.batch}: cosine(ZO estimate, exact gradient); "
          f"random unit directions give ~{expected:.2f} at exact arithmetic")
    rows: list[dict[str, float | str]] = []

    def row(label: str, value: float) -> None:
        rows.append({"scores": label, "cosine": value})
        print(f"{label:>28s} {value:6.3f}")

    print(f"{'scores':>28s} cosine")
    with exact_float32(dev):
        api = conv_api(args.device)
        for noise in (0.0, 1e-5, 1e-4, 4.9e-4, 1e-3, 3.9e-3):  # TF32 and bf16 unit roundoffs: 4.9e-4, 3.9e-3
            row("IEEE float32" if noise == 0 else f"x (1 + {noise:.1e} N(0,1))", cosine(api, x, y, args.q, args.mu, noise))
    if dev.type == "cuda":
        conv = torch.backends.cudnn.conv
        before = conv.fp32_precision
        for mode in ("tf32", "ieee"):
            conv.fp32_precision = mode
            row(f"cuDNN convolutions {mode}", cosine(conv_api(args.device), x, y, args.q, args.mu, 0.0))
        conv.fp32_precision = before
    return rows


if __name__ == "__main__":
    main()
