"""Embedding vs one-hot language model, step by step: is the embedding path slower per token?

    python benchmarks/embedding_pair.py              # 150 interleaved steps each, about 10 s
    python benchmarks/embedding_pair.py --steps 400

The suite's ``embedding`` case times 9 repeats of several steps, whose spread (10-20% on a
shared machine) is larger than the difference it looks for. This script alternates single
training steps of the two models (LSTM V65 E64 H128 B32 T50, float32, Adam, norm clip 5, the
same batch), swapping which goes first every step, so the machine's noise falls on both
alike, and prints the medians and the ratio one-hot / embedding (>= 1: the embedding path is
no slower).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import numbarnn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="timed steps of each model")
    args = parser.parse_args(argv)
    V, E, H, B, T = 65, 64, 128, 32, 50
    options = dict(vocab_size=V, hidden_size=H, dtype="float32", seed=0, clip=5.0, clip_mode="norm")
    models = {"embedding": numbarnn.make_trainer("lstm", "softmax_cross_entropy", "adam", embedding=E, **options),
              "one-hot": numbarnn.make_trainer("lstm", "softmax_cross_entropy", "adam", **options)}
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    for trainer in models.values():  # compile and warm up
        for _ in range(5):
            trainer.train_step(x, y)
    times = {name: [] for name in models}
    for step in range(args.steps):
        order = list(models) if step % 2 else list(models)[::-1]
        for name in order:
            start = time.perf_counter()
            models[name].train_step(x, y)
            times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    paired = float(np.median(np.array(times["one-hot"]) / np.array(times["embedding"])))
    tokens = B * T
    for name, median in medians.items():
        print(f"{name:9s} median {median * 1e3:7.2f} ms a step, {median / tokens * 1e9:7.0f} ns a token")
    print(f"one-hot / embedding: {medians['one-hot'] / medians['embedding']:.3f} (medians), "
          f"{paired:.3f} (median of step pairs); >= 1 means the embedding path is no slower")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
