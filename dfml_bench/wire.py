"""The tensor wire format shared by ``dfml-bench pool serve`` and the ``http`` pool client.

A frame (no pickle anywhere): a little-endian uint32 ``N``, ``N`` bytes of UTF-8 JSON header
``{"dtype": "float32" | "int64" | "uint8", "shape": [...], "request_id": "...", ...}``, then the
tensor's raw little-endian bytes in C order, sent with Content-Type :data:`CONTENT_TYPE`.
:data:`PROTOCOL` is the version both sides must speak (the listing carries it).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dfml_bench.errors import DfmlError

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["CONTENT_TYPE", "DTYPES", "MAX_HEADER", "PROTOCOL", "WireError", "decode_frame", "decode_tensor",
           "encode_frame", "encode_tensor"]

PROTOCOL = 1
CONTENT_TYPE = "application/vnd.dfml-bench.tensor"
DTYPES = {"float32": "<f4", "int64": "<i8", "uint8": "u1"}
MAX_HEADER = 1 << 16


class WireError(DfmlError):
    """A tensor frame is malformed."""


def encode_frame(header: Mapping[str, Any], array: np.ndarray) -> bytes:
    """A frame: uint32 header length, JSON header (with dtype and shape added), raw bytes."""
    import numpy as np

    name = {("f", 4): "float32", ("i", 8): "int64", ("u", 1): "uint8"}.get((array.dtype.kind, array.dtype.itemsize))
    if name is None:
        raise WireError(f"dtype {array.dtype} cannot be sent; use one of {sorted(DTYPES)}.")
    data = np.ascontiguousarray(array, dtype=DTYPES[name])
    head = json.dumps({**header, "dtype": name, "shape": list(data.shape)}, separators=(",", ":")).encode()
    return struct.pack("<I", len(head)) + head + data.tobytes()


def decode_frame(body: bytes) -> tuple[dict[str, Any], np.ndarray]:
    """(header, array) of a frame, or WireError saying what is wrong with it."""
    import numpy as np

    if len(body) < 4:
        raise WireError(f"a tensor frame needs at least 4 bytes, got {len(body)}.")
    (n,) = struct.unpack_from("<I", body)
    if n > MAX_HEADER or 4 + n > len(body):
        raise WireError(f"the frame header length {n} does not fit the {len(body)}-byte body.")
    try:
        header = json.loads(body[4:4 + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WireError("the frame header is not UTF-8 JSON.") from None
    except RecursionError:  # a header nested thousands deep
        raise WireError("the frame header is nested too deeply; send a flat JSON object.") from None
    if not isinstance(header, dict):
        raise WireError("the frame header must be a JSON object.")
    dtype, shape = header.get("dtype"), header.get("shape")
    if dtype not in DTYPES:
        raise WireError(f"frame dtype {dtype!r} is not one of {sorted(DTYPES)}.")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in shape):
        raise WireError(f"frame shape {shape!r} is not a list of sizes.")
    payload = body[4 + n:]
    expected = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
    if len(payload) != expected:
        raise WireError(f"a {dtype} tensor of shape {shape} takes {expected} bytes, but the frame carries "
                        f"{len(payload)}.")
    return header, np.frombuffer(payload, dtype=DTYPES[dtype]).reshape(shape)


def encode_tensor(header: Mapping[str, Any], tensor: torch.Tensor) -> bytes:
    """A frame of a (CPU-copied) torch tensor."""
    return encode_frame(header, tensor.detach().cpu().contiguous().numpy())


def decode_tensor(body: bytes) -> tuple[dict[str, Any], torch.Tensor]:
    """(header, torch tensor) of a frame (the tensor owns its memory)."""
    import torch

    header, array = decode_frame(body)
    return header, torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))
