"""pagcore: the code behind the book "Do Perceptually Aligned Gradients Imply Adversarial Robustness?".

The package is in layers; a part imports only from its own layer or the layers below it
(:data:`LAYERS`, checked by ``tests/test_layering.py``). From the bottom:

1. :mod:`pagcore.base`: parameter checks, eval mode, progress bars, clean stops on a signal, deadlines,
   derived seeds.
2. :mod:`pagcore.data`: CIFAR-10 and STL-10 as uint8 tensors, and the one conversion to floats.
3. :mod:`pagcore.paper`: the paper's mathematics. The PAG objective, Eq. (1)-(2)
   (``objective``); Section 4's target gradients (``targets``) and RIGD (``rigd``); Algorithm 1's
   PGD (``attacks``); the ResNet-18 and augmentation of Appendix C.2 (``models``, ``augment``);
   every number and setting the paper reports (``reported``); the later version's class-conditional
   denoiser and its score-based targets (``denoiser``, with ``reference_denoisers``); randomized
   smoothing (``smoothing``).
4. :mod:`pagcore.config`: every knob of a real-data run, once; the ``paper`` and ``cpu`` scales.
5. :mod:`pagcore.store`: the run store (one directory per run), provenance and session records.
6. :mod:`pagcore.evaluate`: the final PGD evaluation and PAG pictures; PGD-100, AutoAttack, the
   gradient-masking checklist, the PAG scores and randomized smoothing's certificate, stored beside a
   run; a denoiser's quality.
7. :mod:`pagcore.train` (one resumable real-data run; device and strategy defaults; the denoiser's
   training and its table of score-based targets) and
   :mod:`pagcore.toy` (Section 5.1, every seed trained as one batched model).
8. :mod:`pagcore.orchestrate`: the book's rows of runs, the queue that makes the missing ones (one
   after another or side by side in worker processes), the stronger evaluations of a table, the
   self-test, sweeps on Slurm or local processes.
9. :mod:`pagcore.book`: tables, verdicts, figures, the reproduction status and the λ explorers.
10. :mod:`pagcore.cli`: ``python -m pagcore`` (through :mod:`pagcore.__main__`).

Imports sit at module top; only optional dependencies that most uses never need (AutoAttack,
submitit, PyYAML, torchvision, Jupyter's packages) are imported where they are used.
"""

LAYERS: tuple[tuple[str, ...], ...] = (
    ("base",),
    ("data",),
    ("paper",),
    ("config",),
    ("store",),
    ("evaluate",),
    ("train", "toy"),
    ("orchestrate",),
    ("book",),
    ("cli", "__main__"),
)
"""Parts of the package, bottom layer first (see the module docstring)."""

__version__ = "0.1.0"
