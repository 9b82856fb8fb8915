#!/bin/bash
# SASS instructions per Mosaic GPU kernel of the layer's three ping-pong gmm calls at
# gpt-oss-20b's widths (K = 2880, N = 5760 and, transposed, 2880; zero_unused=False;
# with tile_fill, so the paired order where a patch brings it): tests variant 50's
# code-size suspect. Repository root, GPU machine; writes the counts to $1 (a text
# file) and prints them. About a minute.
#   bash bench/results/nvidia-h200/half-pairs/sass_count.sh "$OUT/sass-LABEL.txt"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
tmp=$(mktemp -d)
MOSAIC_GPU_DUMP_SASS=1 timeout 150 python3 -c "
import jax.numpy as jnp
from bench import gmm_probe
from moe_jax import kernels
x, w, b, g, f = gmm_probe.operands(32, 2880, 5760, 8, seed=1)
kernels.gmm_glu(x, w, b, g, f, activation='gpt_oss_glu', implementation='pallas', return_h=True, zero_unused=False)[0].block_until_ready()
kernels.gmm(x, w, g, tile_fill=f, implementation='pallas', zero_unused=False).block_until_ready()
kernels.gmm(x, jnp.swapaxes(w, 1, 2)[:, :2880], g, tile_fill=f, transpose_rhs=True, implementation='pallas', zero_unused=False).block_until_ready()
" > "$tmp/sass.txt" 2>&1
echo "compile rc=$?"
# A SASS line holds its offset as /*0a70*/; a kernel starts at a cuobjdump-style
# 'Function : name' header or an nvdisasm-style '.text.name' section line.
python3 - "$tmp/sass.txt" "$1" <<'PY'
import re, sys
name, counts = "(no header)", {}
for line in open(sys.argv[1], errors="replace"):
  m = (re.search(r"Function : (\S+)", line)
       or re.search(r"^\s*(?://-+\s*)?\.text\.([\w$.]+?)(?::|\s|$)", line))
  if m:
    name = m.group(1)
    counts[name] = counts.get(name, [])
    counts[name].append(0)
  elif re.search(r"/\*[0-9a-f]{4,}\*/", line):
    counts.setdefault(name, [0])[-1] += 1
out = "\n".join(f"{k}: {v} SASS instructions ({16 * sum(v) // 1024} KB)" for k, v in counts.items())
print(out or "no SASS found")
open(sys.argv[2], "w").write((out or "no SASS found") + "\n")
PY
rm -rf "$tmp"
