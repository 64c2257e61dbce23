"""Mutation check: plant one bug at a time in a copy of the repository and see whether the
tests notice.

    python tests/mutants.py                 # every mutant, the default test subset, from HEAD
    python tests/mutants.py --list          # what each mutant changes
    python tests/mutants.py --only clip-mode-ignored resume-rng-dropped
    python tests/mutants.py --worktree      # copy the working tree (uncommitted changes too)
    python tests/mutants.py --tests tests/test_training.py --tests numbarnn/data.py

Each mutant is one string replacement in ``numbarnn/trainer.py``, ``fit.py``, ``cpu_backend.py``, ``data.py``,
``checkpoint.py`` or ``optimizers.py``: the kind of slip a refactor makes (a forgotten
restore, a count that includes padding, a mode that is ignored). The repository is copied
to a scratch directory (``git archive HEAD``, or the tracked and untracked-but-not-ignored
files with ``--worktree``); the checkout itself is never modified. The unmutated copy must
pass the chosen tests first; then, for each mutant, the file is changed in the copy, the
tests run with ``PYTHONPATH`` pointing at the copy (stopping at the first failure), and the
file is put back. A mutant is *caught* when a test fails (the first failing test is
reported) and *survives* when all pass. A replacement whose text is no longer in the file
is reported as *stale*: update the mutant after a refactor.

The default tests are the fast ones that cover those modules (about a minute when nothing
fails); every mutant listed here is caught by them. It is slow (minutes), so it is not
part of the test suite: ``docs/testing.md`` records the last run.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str     # relative to the repository root
    what: str     # the bug, in words
    edits: tuple  # (old, new) pairs: the first whose ``old`` occurs exactly once is applied


def M(name, path, what, *edits):
    return Mutant(name, path, what, tuple(edits))


MUTANTS = [
    # -- the four that survived the whole CPU suite before (issue 13) --
    M("eval-counts-padding", "numbarnn/trainer.py",
      "evaluate counts padded positions as tokens (weights.size, not the mask's sum)",
      ("return loss, float(weights.sum()), final", "return loss, float(weights.size), final")),
    M("resume-rng-dropped", "numbarnn/data.py",
      "loading a shuffled source's saved position does not restore its shuffling generator",
      ("    batches.rng.bit_generator.state = rng.bit_generator.state\n", "")),
    M("nonfinite-no-restore", "numbarnn/fit.py",
      "fit keeps the weights of an update that made them non-finite",
      ("        state.trainer.restore_params(self.snapshot)\n", "")),
    M("clip-mode-ignored", "numbarnn/cpu_backend.py",
      "train_step clips by value whatever clip_mode says",
      ("clip_flat(self.model.flat_grads, self.clip, self.clip_mode)",
       "clip_flat(self.model.flat_grads, self.clip, \"value\")")),
    # -- the trainer --
    M("batch-mean-dropped", "numbarnn/cpu_backend.py",
      "the general path sums the gradient over the batch instead of averaging it",
      ("d_outputs *= self.model.dtype.type(1.0 / B)", "d_outputs *= self.model.dtype.type(1.0)")),
    M("mask-ignored", "numbarnn/trainer.py",
      "_prepare drops the mask: padding counts in the loss and the gradient",
      ("return x, y, weights.reshape(T * B).astype(model.dtype)", "return x, y, np.ones(T * B, model.dtype)")),
    M("stream-state-not-carried", "numbarnn/fit.py",
      "fit starts every chunk of a stream from a zero state",
      ("state=trainer.state if carry else None", "state=None")),
    M("validation-state-not-carried", "numbarnn/trainer.py",
      "validation_loss starts every chunk of a stream from a zero state",
      ("state=state if carry else None)", "state=None)")),
    M("beam-keeps-the-worst", "numbarnn/trainer.py",
      "beam search keeps the least likely candidates",
      ("candidates.sort(key=lambda c: -c[1])", "candidates.sort(key=lambda c: c[1])")),
    M("undone-step-counted", "numbarnn/fit.py",
      "an update undone for non-finite weights still counts as a step",
      ("        state.trainer.step = self.good_step", "        pass")),
    # -- the data --
    M("no-reshuffle", "numbarnn/data.py",
      "NamesBatches keeps the first epoch's order for every epoch",
      ("            self.position = 0\n            self.order = self.rng.permutation(len(self.encoded))\n",
       "            self.position = 0\n")),
    M("newline-target-unmasked", "numbarnn/data.py",
      "pad_names gives the closing newline target a mask of 0",
      ("mask[b, :n + 1] = 1.0", "mask[b, :n] = 1.0")),
    M("stream-carry-across-epochs", "numbarnn/data.py",
      "StreamBatches carries the state from the end of the text into its start",
      ("return self.inputs[:, start:end], self.targets[:, start:end], None, start > 0",
       "return self.inputs[:, start:end], self.targets[:, start:end], None, self.epoch + start > 0")),
    # -- checkpoints --
    M("trainer-rng-not-restored", "numbarnn/checkpoint.py",
      "load_checkpoint does not restore the trainer's generator (dropout masks differ after resume)",
      ("trainer.rng.bit_generator.state = meta[\"rng\"]", "pass")),
    M("history-not-restored", "numbarnn/checkpoint.py",
      "load_checkpoint starts the loss history afresh",
      ("trainer.history = [tuple(h) for h in meta[\"history\"]]", "trainer.history = []"),
      ("trainer.history = [tuple(h) for h in meta.get(\"history\", [])]", "trainer.history = []")),
    M("carried-state-not-restored", "numbarnn/checkpoint.py",
      "load_checkpoint drops the carried hidden state of a stream",
      ("trainer.state = trainer.model.state_from_arrays([arrays[f\"state/{i}\"] for i in range(n)])", "pass")),
    # -- optimizers --
    M("optimizer-step-not-restored", "numbarnn/optimizers.py",
      "Optimizer.load_state_dict keeps its own step count (Adam's bias correction restarts)",
      ("        self.step_count = int(step)\n", "")),
    M("nesterov-ignored", "numbarnn/optimizers.py",
      "Momentum ignores nesterov=True",
      ("_k.momentum_update(p, g, velocity, o[\"lr\"], o[\"momentum\"], o[\"nesterov\"], o[\"weight_decay\"])",
       "_k.momentum_update(p, g, velocity, o[\"lr\"], o[\"momentum\"], False, o[\"weight_decay\"])")),
    M("state-dict-aliases", "numbarnn/optimizers.py",
      "Optimizer.state_dict returns views of the live state instead of copies",
      ("out[f\"{slot}.{key}\"] = arr.copy()", "out[f\"{slot}.{key}\"] = arr")),
    M("norm-clip-scales-up", "numbarnn/optimizers.py",
      "clip_gradients (by norm) also scales small gradients up to the clip",
      ("        if coef < 1.0:  # PyTorch clamps", "        if coef != 1.0:  # PyTorch clamps")),
]

# Fast tests that cover the four modules: the trainer and checkpoint tests without the
# command-line subprocesses, every registered component, the optimizers, and the modules'
# own docstring examples.
DEFAULT_TESTS = ["tests/test_training.py", "tests/test_every_component.py", "tests/test_optim.py",
                 "tests/test_fit_callbacks.py", "numbarnn/trainer.py", "numbarnn/fit.py", "numbarnn/cpu_backend.py",
                 "numbarnn/data.py", "numbarnn/checkpoint.py", "numbarnn/optimizers.py"]
DEFAULT_DESELECT = ("command_line or usage_error or help_on_every or stream_mode_on_a_user_file or killing "
                    "or plot_without or trajectory_matches_torch")


def copy_repository(dest: Path, worktree: bool) -> None:
    """The repository's files into ``dest``: HEAD's tree, or the working tree's tracked and
    untracked-but-not-ignored files."""
    dest.mkdir(parents=True)
    if not worktree:
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def run_tests(copy: Path, scratch: Path, tests, deselect, timeout):
    """``(returncode, output)`` of pytest on ``tests`` inside the copy, stopping at the first failure."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(copy), str(copy / "plugins" / "numbarnn-gru")]),
               PYTHONDONTWRITEBYTECODE="1",  # no stale bytecode of a file changed within a second
               NUMBA_CACHE_DIR=str(scratch / "numba-cache"), NUMBARNN_CACHE_DIR=str(scratch / "loops"))
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider", "-o", "addopts=",
               "--doctest-modules", "--ignore=tests/fixtures", *tests]
    if deselect:
        command += ["-k", f"not ({deselect})"]
    try:
        result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    return result.returncode, result.stdout + result.stderr


def first_failure(output: str) -> str:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    return match.group(1) if match else "(no FAILED line: see the output)"


def apply(mutant: Mutant, text: str):
    """The mutated text, or None when no edit's ``old`` occurs exactly once or the result is
    not valid Python (a syntax error would be caught for the wrong reason)."""
    for old, new in mutant.edits:
        if text.count(old) == 1:
            mutated = text.replace(old, new)
            try:
                ast.parse(mutated)
            except SyntaxError:
                return None
            return mutated
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    parser.add_argument("--tests", action="append", metavar="PATH", help="test files or node ids (repeatable); "
                        "default: " + " ".join(DEFAULT_TESTS))
    parser.add_argument("--deselect", default=None, help=f"a -k expression to leave out (default: {DEFAULT_DESELECT!r}"
                        " with the default tests, nothing otherwise)")
    parser.add_argument("--worktree", action="store_true", help="copy the working tree instead of HEAD")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per test run (default 1800)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)

    chosen = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in MUTANTS})
        if unknown:
            parser.error(f"unknown mutant(s): {', '.join(unknown)}")
        chosen = [m for m in MUTANTS if m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:30} {m.path:24} {m.what}")
        return 0
    tests = args.tests or DEFAULT_TESTS
    deselect = args.deselect if args.deselect is not None else ("" if args.tests else DEFAULT_DESELECT)

    scratch = Path(tempfile.mkdtemp(prefix="numbarnn-mutants-"))
    copy = scratch / "repo"
    try:
        copy_repository(copy, args.worktree)
        print(f"copy of {'the working tree' if args.worktree else 'HEAD'} in {copy}; tests: {' '.join(tests)}"
              + (f" -k 'not ({deselect})'" if deselect else ""), flush=True)
        started = time.time()
        code, output = run_tests(copy, scratch, tests, deselect, args.timeout)
        if code != 0:
            print(output[-6000:])
            print(f"the unmutated copy does not pass these tests (exit {code}); nothing to compare against")
            return 2
        print(f"unmutated: passes ({time.time() - started:.0f} s)", flush=True)
        results = []
        for mutant in chosen:
            target = copy / mutant.path
            original = target.read_text(encoding="utf-8")
            mutated = apply(mutant, original)
            if mutated is None:
                results.append((mutant, "stale", "its text is not in the file exactly once, or the result does not parse"))
                print(f"{mutant.name:30} STALE", flush=True)
                continue
            target.write_text(mutated, encoding="utf-8")
            started = time.time()
            try:
                code, output = run_tests(copy, scratch, tests, deselect, args.timeout)
            finally:
                target.write_text(original, encoding="utf-8")
            if code is None:
                verdict, detail = "caught", output
            elif code == 0:
                verdict, detail = "SURVIVED", "every test passed"
            else:
                verdict, detail = "caught", first_failure(output)
            results.append((mutant, verdict, detail))
            print(f"{mutant.name:30} {verdict:8} {detail} ({time.time() - started:.0f} s)", flush=True)
        survivors = [r for r in results if r[1] != "caught"]
        print(f"\n{len(results) - len(survivors)} of {len(results)} mutants caught")
        for mutant, verdict, _ in survivors:
            print(f"  {verdict}: {mutant.name} ({mutant.path}): {mutant.what}")
        return 1 if survivors else 0
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
