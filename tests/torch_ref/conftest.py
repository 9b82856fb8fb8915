"""torch_ref tests run torch single-threaded.

Their matmuls are tiny (64 x 64), where intra-op threads only add overhead, and
OpenMP's spinning threads slow ~7x when another process shares the cores.
"""
import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)
