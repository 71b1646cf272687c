"""litlab's Hydra plugins (Hydra takes plugins from this package only): hydra/launcher=slurm's
launcher (litlab.slurm) and hparams_search's sweeper (litlab.studies)."""

from litlab import slurm, studies


class SlurmLauncher(slurm.SlurmLauncher):
    pass


class OptunaSweeper(studies.OptunaSweeper):
    pass
