"""litlab's Hydra plugins (Hydra takes plugins from this package only): hydra/launcher=slurm's
launcher (litlab.sweeps.slurm) and hparams_search's sweeper (litlab.sweeps.studies)."""

from litlab.sweeps import slurm, studies


class SlurmLauncher(slurm.SlurmLauncher):
    pass


class OptunaSweeper(studies.OptunaSweeper):
    pass
