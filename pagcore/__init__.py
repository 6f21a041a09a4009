"""pagcore: the code behind the book "Do Perceptually Aligned Gradients Imply Adversarial Robustness?".

The modules, by layer (a module imports only from its own layer or the ones above it):

**The paper's mathematics**

* :mod:`~pagcore.objective`: Eq. (1)-(2), per-image input-gradients (batch-norm held fixed), k-sampling
* :mod:`~pagcore.targets`: Section 4.2's target gradients (one image, class mean, nearest neighbour)
* :mod:`~pagcore.rigd`: Section 4.1's robust input-gradient distillation
* :mod:`~pagcore.attacks`: Algorithm 1, PGD in L-inf and L2 (best iterate, restarts)
* :mod:`~pagcore.augment`, :mod:`~pagcore.models`: crops and flips on the device; ResNet-18
* :mod:`~pagcore.paper`: every number and setting the paper states

**Configuration and small utilities**

* :mod:`~pagcore.config`: every knob of a real-data run, once; the ``paper`` and ``cpu`` scales
* :mod:`~pagcore.validation`, :mod:`~pagcore.devices`, :mod:`~pagcore.modes`, :mod:`~pagcore.interrupts`,
  :mod:`~pagcore.progress`: parameter checks, device choice, eval mode, clean stops, progress bars

**Drivers**

* :mod:`~pagcore.toy`: Section 5.1, all seeds trained as one batched model
* :mod:`~pagcore.training`: Appendix C.2, one resumable training run
* :mod:`~pagcore.evaluation`: Section 5.2, PGD-20 and the PAG pictures
* :mod:`~pagcore.run_evaluations`, :mod:`~pagcore.autoattack`, :mod:`~pagcore.checks`, :mod:`~pagcore.pag_score`:
  stronger attacks, the gradient-masking checklist and a PAG score, stored beside a run
* :mod:`~pagcore.experiments`: the paper's tables as rows of runs
* :mod:`~pagcore.sweep`: grids of runs on a Slurm cluster or local processes (submitit)
* :mod:`~pagcore.campaign`: a GPU window spent by a script: smoke checks, the step benchmark,
  paper-scale runs in resumable slices, results packed for the way back

**Storage**

* :mod:`~pagcore.runs`: the run store (one directory per run, named by what was trained)
* :mod:`~pagcore.provenance`: git sha, device, dates, atomic JSON
* :mod:`~pagcore.transfer`: moving data and checkpoints within the GPU machine's size limits

**Presentation**

* :mod:`~pagcore.report`, :mod:`~pagcore.plotting`, :mod:`~pagcore.status`, :mod:`~pagcore.widgets`:
  tables, figures, the reproduction status and the λ explorers of the book

The command line (``python -m pagcore``) is :mod:`~pagcore.cli`.
"""

__version__ = "0.1.0"
