"""Black-box and white-box access to pre-trained classifiers ("APIs"), with query accounting.

A :class:`BlackBoxAPI` answers ``query(images) -> scores`` and nothing else: it holds no
reference to the network. The network lives in this module's private table, keyed by an
opaque token, so no attribute path, ``vars()``, ``gc.get_referents`` or pickle of an API
object reaches its weights. (Code in the same process can of course read private module
state; real isolation is a remote API.) A :class:`WhiteBoxAPI` is the separate, explicit
capability that white-box baselines ask for.

Every image queried is charged to a :class:`QueryLedger` before the forward pass; when a
budget is set and would be exceeded, :class:`QueryBudgetExhausted` is raised and nothing
is computed, so a run can stop cleanly and record what it reached.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dfml_bench.errors import AccessError, DfmlError

if TYPE_CHECKING:
    import torch
    from torch import nn

OUTPUT_MODES = ("logits", "probs", "label")


class QueryBudgetExhausted(DfmlError):
    """A query would exceed the run's query budget; nothing was computed for it."""

    def __init__(self, used: int, requested: int, budget: int):
        super().__init__(f"the query budget of {budget:,} images is exhausted ({used:,} used, "
                         f"{requested:,} more requested); raise --budget to go further.")
        self.used, self.requested, self.budget = used, requested, budget


class QueryLedger:
    """Counts queried images per API and in total, against an optional budget."""

    def __init__(self, budget: int | None = None):
        self.budget = budget
        self.total = 0
        self.per_api: dict[str, int] = {}
        self._lock = threading.Lock()

    def charge(self, api_id: str, n: int) -> None:
        """Charge `n` images to `api_id`, or raise QueryBudgetExhausted without charging."""
        with self._lock:
            if self.budget is not None and self.total + n > self.budget:
                raise QueryBudgetExhausted(self.total, n, self.budget)
            self.total += n
            self.per_api[api_id] = self.per_api.get(api_id, 0) + n

    def refund(self, api_id: str, n: int) -> None:
        """Take back `n` images charged to `api_id` that were never answered (a remote API gave up)."""
        with self._lock:
            used = self.per_api.get(api_id, 0)
            n = min(n, used)
            if n > 0:
                self.total -= n
                self.per_api[api_id] = used - n

    def state_dict(self) -> dict[str, object]:
        return {"total": self.total, "per_api": dict(self.per_api)}

    def load_state_dict(self, state: dict) -> None:
        self.total = int(state["total"])
        self.per_api = {str(k): int(v) for k, v in dict(state["per_api"]).items()}


@dataclasses.dataclass(frozen=True)
class APIInfo:
    """What a user knows about an API: its identity, classes and input resolution."""

    api_id: str
    dataset: str
    architecture: str
    classes: tuple[int, ...]          # global class ids, in output order
    class_names: tuple[str, ...]
    input_size: int                   # the API resizes [0,1] images to this size itself


@dataclasses.dataclass
class _Backend:
    module: nn.Module | None             # the trained network (kept for white-box access only)
    infer: nn.Module                     # what queries run: BatchNorm folded into the convolutions
    mean: torch.Tensor
    std: torch.Tensor
    channels_last: bool = False          # inputs in channels-last memory format (module converted)
    autocast: torch.dtype | None = None  # e.g. torch.bfloat16: query forwards under autocast
    slice_bytes: int = 0                 # input bytes per forward pass (0: one pass per query)


_BACKENDS: dict[int, _Backend] = {}
_TOKENS = itertools.count(1)


def _backend(token: int) -> _Backend:
    try:
        return _BACKENDS[token]
    except KeyError:
        raise AccessError("this API handle is not valid in this process (APIs cannot be pickled "
                          "or moved between processes; load the pool in each worker).") from None


def _preprocess(backend: _Backend, images: torch.Tensor, size: int) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    x = images.to(backend.mean.device, dtype=backend.mean.dtype)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    fmt = torch.channels_last if backend.channels_last else torch.contiguous_format
    return ((x - backend.mean) / backend.std).contiguous(memory_format=fmt)


def _answer(backend: _Backend, images: torch.Tensor, size: int) -> torch.Tensor:
    """Logits of one forward pass (inference mode, under autocast when the backend asks for it)."""
    import torch

    x = _preprocess(backend, images, size)
    if backend.autocast is None:
        return backend.infer(x)
    with torch.autocast(x.device.type, dtype=backend.autocast):
        return backend.infer(x).float()


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An inference copy of an eval-mode `module` with each BatchNorm that directly follows a
    convolution folded into that convolution's weights and bias (torch.fx), or `module` itself
    when it cannot be traced or has a BatchNorm without running statistics (which would use the
    batch's). Logits move by float rounding only (~1e-7); queries 1.3-1.6x faster on CPU
    (benchmarks/zo_estimator.py --ablate)."""
    from torch import nn

    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or any(m.running_mean is None or m.running_var is None for m in norms):
        return module
    try:
        from torch.fx.experimental.optimization import fuse

        folded = fuse(module, inplace=False)
    except Exception:  # noqa: BLE001 - not traceable (data-dependent control flow): run it as it is
        return module
    folded.eval()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


class BlackBoxAPI:
    """Query-only access: ``query(images in [0,1], [B,3,H,W]) -> logits | probs | labels``."""

    __slots__ = ("info", "output", "_token", "_ledger")

    def __init__(self, info: APIInfo, token: int, ledger: QueryLedger, output: str = "logits"):
        if output not in OUTPUT_MODES:
            raise DfmlError(f"unknown API output mode '{output}'; use one of {OUTPUT_MODES}.")
        self.info, self.output, self._token, self._ledger = info, output, token, ledger

    @property
    def api_id(self) -> str:
        return self.info.api_id

    @property
    def classes(self) -> tuple[int, ...]:
        return self.info.classes

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Scores for a batch of [0,1] images; each image is charged to the ledger first."""
        import torch

        if images.dim() != 4 or images.shape[1] != 3:
            raise DfmlError(f"an API takes images of shape [B, 3, H, W], not {tuple(images.shape)}.")
        self._ledger.charge(self.info.api_id, int(images.shape[0]))
        backend = _backend(self._token)
        n, size = images.shape[0], self.info.input_size
        step = max(1, backend.slice_bytes // (3 * size * size * 4)) if backend.slice_bytes else max(n, 1)
        with torch.inference_mode():  # slices bound the activations' memory, whatever the query's size
            logits = torch.cat([_answer(backend, images[i:i + step], size) for i in range(0, max(n, 1), step)])
        if self.output == "probs":
            return logits.softmax(dim=1).clone()
        if self.output == "label":
            return logits.argmax(dim=1).clone()
        return logits.clone()  # a normal tensor, not an inference tensor

    def __getattr__(self, name: str) -> None:
        if name in ("module", "forward", "parameters", "named_parameters", "state_dict", "weights", "model"):
            raise AccessError(f"'{name}' needs white-box access, but this is a black-box API: it only answers "
                              "query(images). Register the method with access='white' and use a white-box "
                              "scenario to get weights.")
        raise AttributeError(f"{type(self).__name__} has no attribute '{name}'")

    def __reduce__(self) -> None:  # type: ignore[override]
        raise AccessError("a BlackBoxAPI cannot be pickled: it is a handle to a model in this process.")

    def __repr__(self) -> str:
        return (f"BlackBoxAPI({self.info.api_id}, {self.info.architecture} on {self.info.dataset}, "
                f"classes={list(self.info.classes)}, output={self.output})")


class WhiteBoxAPI(BlackBoxAPI):
    """Full access for white-box baselines: the module (frozen, eval mode) and differentiable logits."""

    __slots__ = ()

    @property
    def module(self) -> nn.Module:
        module = _backend(self._token).module
        assert module is not None  # white-box backends keep their module
        return module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable logits w.r.t. the [0,1] images (charged like a query)."""
        self._ledger.charge(self.info.api_id, int(images.shape[0]))
        backend = _backend(self._token)
        assert backend.module is not None  # white-box backends keep their module
        return backend.module(_preprocess(backend, images, self.info.input_size))


def make_api(module: nn.Module, info: APIInfo, mean: Sequence[float], std: Sequence[float], ledger: QueryLedger,
             *, output: str = "logits", white_box: bool = False, channels_last: bool | None = None,
             autocast: torch.dtype | None = None, slice_mb: float | None = None,
             fold_bn: bool = True) -> BlackBoxAPI:
    """Wrap a trained module (moved to its device by the caller) as an API handle.

    `channels_last` (default: on for CPU, where it speeds up conv4 / ResNet forwards, see
    benchmarks/README.md; off elsewhere until measured) converts the module to channels-last
    memory format. Queries run :func:`fold_batchnorm`'s copy of the module (`fold_bn=False`: the
    module itself); a black-box handle keeps only that copy, a white-box one both (its `forward`
    and `module` are the original, differentiable network). `autocast` (e.g. torch.bfloat16, meant
    for GPUs; off by default) runs query
    forwards under autocast; white-box forwards stay in full precision. A query runs in forward
    passes of `slice_mb` MB of (resized) input each, so the network's activations stay bounded
    however many images a call carries (benchmarks/zo_memory.py); default 1 MB on CPU, where
    cache-sized slices are also faster than one pass (benchmarks/README.md), 64 MB elsewhere;
    0: one pass.
    """
    import torch

    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    device = next(module.parameters()).device
    if channels_last is None:
        channels_last = device.type == "cpu"
    if slice_mb is None:
        slice_mb = 1 if device.type == "cpu" else 64
    infer = fold_batchnorm(module) if fold_bn else module
    if channels_last:
        module.to(memory_format=torch.channels_last)
        infer.to(memory_format=torch.channels_last)
    backend = _Backend(module if white_box else None, infer, torch.tensor(mean, device=device).view(1, -1, 1, 1),
                       torch.tensor(std, device=device).view(1, -1, 1, 1), channels_last, autocast,
                       int(slice_mb * 2**20))
    token = next(_TOKENS)
    _BACKENDS[token] = backend
    cls = WhiteBoxAPI if white_box else BlackBoxAPI
    return cls(info, token, ledger, output)


def release(api: BlackBoxAPI) -> None:
    """Free the model behind an API handle (the handle becomes invalid)."""
    _BACKENDS.pop(api._token, None)
