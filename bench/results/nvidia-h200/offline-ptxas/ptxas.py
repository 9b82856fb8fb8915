"""Compiles TTIR files for sm_90a with a pip-installed Triton and reports ptxas's
registers and spills per kernel, and its SASS instruction count (Triton's bundled
cuobjdump); no GPU needed. Run with a Python that has
`triton` (e.g. `python3 -m venv /tmp/tv && /tmp/tv/bin/pip install triton==3.6.0`,
the device's version) and a CUDA ptxas (PTXAS, default `ptxas` on PATH):

  /tmp/tv/bin/python bench/results/nvidia-h200/offline-ptxas/ptxas.py FILE.ttir ... [--warps 4]
"""
import argparse
import os
import re
import subprocess

import triton
from triton.backends.compiler import GPUTarget


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("files", nargs="+")
  parser.add_argument("--warps", type=int, default=4)
  parser.add_argument("--stages", type=int, default=1)
  args = parser.parse_args()
  ptxas = os.environ.get("PTXAS", "ptxas")
  for path in args.files:
    try:
      kernel = triton.compile(path, target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=args.warps, num_stages=args.stages))
    except Exception as e:  # noqa: BLE001 (report and go on)
      print(f"{os.path.basename(path)}: compile failed: {type(e).__name__}: {str(e)[:500]}")
      continue
    ptx = path + ".ptx"
    with open(ptx, "w") as f:
      f.write(kernel.asm["ptx"])
    run = subprocess.run([ptxas, "-arch=sm_90a", "-v", ptx, "-o", os.devnull],
                         capture_output=True, text=True, check=False)
    cubin = path + ".cubin"
    with open(cubin, "wb") as f:
      f.write(kernel.asm["cubin"])
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                             "cuobjdump")
    sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True,
                          check=False).stdout
    instructions = re.findall(r"^\s+/\*[0-9a-f]{4}\*/\s+(\S+)", sass, re.MULTILINE)
    used = re.search(r"Used (\d+) registers", run.stderr)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", run.stderr)
    print(f"{os.path.basename(path)}: {used.group(1) if used else '?'} registers, "
          f"spills {spill.group(1) if spill else '?'}/{spill.group(2) if spill else '?'} B "
          f"(store/load), {kernel.metadata.shared} B shared, "
          f"{len(instructions)} SASS instructions "
          f"({sum(i.startswith('MUFU') for i in instructions)} MUFU, "
          f"{sum(i.startswith('HMMA') for i in instructions)} HMMA)")


if __name__ == "__main__":
  main()
