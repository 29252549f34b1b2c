"""Experiments built on the tasks: the speed/accuracy sweep over class counts (`sweep`), the loss micro-benchmark
(`bench`), their plots (`plots`) and the one child-process runner they share (`child`). Nothing below imports this
layer (docs/ARCHITECTURE.md)."""
