"""Evaluating a trained model: the final PGD evaluation and PAG pictures, and the stronger evaluations
(PGD-100, AutoAttack, the gradient-masking checklist, the PAG score) stored beside a run."""
