"""moe-parity: stage-by-stage numerical parity of moe_jax against the PyTorch references.

Modules: cases (the catalogue), tolerances (one table per dtype), compare (metrics and
verdicts), jax_side / torch_side (running each framework), run (one case), report
(terminal, JSON, markdown) and cli (the `moe-parity` command).
"""
