"""`hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper`: litlab.sweeps.studies'."""

from litlab.sweeps import studies


class OptunaSweeper(studies.OptunaSweeper):
    pass
