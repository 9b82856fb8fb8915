"""`Built`: what a framework runner hands the shared timing loop for one row."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np


@dataclasses.dataclass(kw_only=True)
class Built:
  """One runnable row.

  Attributes:
    fn: the callable timed, `fn(*inputs[j])`.
    inputs: rotated input sets; inputs[0] is the parity input.
    extract: output of fn -> {name: float32/int32 numpy array} compared by parity.
    routing: (indices [T, K], capacity or None) of a component's synthetic routing,
      for the load statistics; None where the row routes by itself (layer, routing).
    detail: what exactly ran (e.g. "grouped GEMM: loop"), or "".
    arg_bytes: bytes of one call's arguments (weights included), for peak memory.
    aot: JAX only: the function to compile ahead of time (fn is then replaced).
  """
  fn: Callable[..., Any]
  inputs: list[tuple]
  extract: Callable[[Any], dict[str, np.ndarray]]
  routing: tuple[np.ndarray, int | None] | None = None
  detail: str = ""
  arg_bytes: int = 0
  aot: bool = False
