"""pagcore: the code behind the book "Do Perceptually Aligned Gradients Imply Adversarial Robustness?".

Where each piece of the paper lives:

* Eq. (1)-(2), the PAG objective ......... :mod:`pagcore.objective`
* Section 4, target gradients g(x, y_t) .. :mod:`pagcore.targets` (and :mod:`pagcore.rigd`)
* Algorithm 1, PGD ....................... :mod:`pagcore.attacks`
* Section 5.1, the 2-D toy experiment .... :mod:`pagcore.toy`
"""

__version__ = "0.1.0"
