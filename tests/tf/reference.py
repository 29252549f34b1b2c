"""TensorFlow's side of the parity tests, run with a Python that has TensorFlow (and no torch needed).

Usage: python reference.py IN.npz OUT.npz. IN holds cases named "<case>/<field>"; for each case it either draws a
TensorFlow candidate sample (`op` = "sample_log_uniform" | "sample_uniform") or computes TensorFlow's loss
(`op` = "sampled_softmax" | "nce") from given weights, inputs and `sampled_values`. Kept apart from the project's
virtualenv because importing TensorFlow changes what `torch.utils.tensorboard` imports and prints.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(src: str, dst: str) -> None:
    data = dict(np.load(src))
    cases = sorted({k.split("/")[0] for k in data})
    out = {}
    for case in cases:
        g = {k.split("/", 1)[1]: v for k, v in data.items() if k.startswith(case + "/")}
        op = str(g["op"])
        if op.startswith("sample_"):
            fn = tf.random.log_uniform_candidate_sampler if op == "sample_log_uniform" else tf.random.uniform_candidate_sampler
            s, t, e = fn(true_classes=tf.constant(g["labels"]), num_true=int(g["num_true"]), num_sampled=int(g["num_sampled"]),
                         unique=bool(g["unique"]), range_max=int(g["range_max"]), seed=int(g["seed"]))
            out[f"{case}/sampled"], out[f"{case}/true_ec"], out[f"{case}/sampled_ec"] = s.numpy(), t.numpy(), e.numpy()
            continue
        fn = tf.nn.sampled_softmax_loss if op == "sampled_softmax" else tf.nn.nce_loss
        loss = fn(
            weights=tf.constant(g["weights"]), biases=tf.constant(g["biases"]), labels=tf.constant(g["labels"]),
            inputs=tf.constant(g["inputs"]), num_sampled=int(g["num_sampled"]), num_classes=int(g["num_classes"]),
            num_true=int(g["num_true"]),
            sampled_values=(tf.constant(g["sampled"]), tf.constant(g["true_ec"]), tf.constant(g["sampled_ec"])),
            remove_accidental_hits=bool(g["remove_accidental_hits"]),
        )
        out[f"{case}/loss"] = loss.numpy()
    np.savez(dst, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
