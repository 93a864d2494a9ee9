"""Training: ``train(spec, runtime) → TrainResult`` (loop.py) and what it stands on.

- ``data.py``: data order (a pure function of seed and epoch; the position is the step count),
  the held-out slice, loaders for the offline cache and online features, the draft's assembly.
- ``checkpoint.py``: the run directory (``spec.toml``, ``step_<N>/``, ``step_latest``), atomic
  saves, retention, resume and the spec comparison that guards it.
- ``launch.py``: process environments (torchrun / accelerate / SLURM), process groups, the
  ``accelerate launch`` command behind ``deepspec train --gpus N``, stop requests (SIGTERM).
- ``metrics.py``: ``metrics.jsonl``, TensorBoard, wandb, metric pooling (live progress: ``deepspec_core.progress``).

Decisions (see the module docstrings for the reasons):

- Validation reads the first ``train.val_samples`` samples of ``data.eval`` when the spec has
  held-out files (cached after the training files, so no second cache), else the *last*
  ``train.val_samples`` samples of the training data; either way they are never trained on, and
  the rule is the same offline and online.
- A run resumes when its ``spec.toml`` differs only in fields that do not change what is trained
  (:data:`checkpoint.RESUMABLE_FIELDS`: logging, checkpoint and validation cadence, loader
  workers, paths, the eval section). ``train.max_steps`` and everything else are refused, since
  they change the schedule or the data order.
- Randomness inside a forward pass is reseeded from (seed, step, micro-batch index in the global
  batch): results are independent of the process count, and resume is bit-exact on CPU.
- Multi-node runs need the run directory on a shared filesystem (process 0 writes checkpoints).
"""
