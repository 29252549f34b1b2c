"""The training layer: the run machinery every task shares (strict config base, run directory, checkpoints,
TensorBoard logger, budget and learning-rate schedule, stop control, distributed plumbing, loss and optimizer
builders) and the one training loop (`loop.run`) that runs a task. It imports the core and the data layer, never a
task or an experiment (docs/ARCHITECTURE.md)."""
