"""The paper's mathematics: the PAG objective, target gradients, RIGD, PGD, the models, augmentation,
and (in :mod:`~pagcore.paper.reported`) every number and setting the paper states."""
