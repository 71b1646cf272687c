"""Many runs: Optuna searches and their pruning, the SLURM launcher, and the report that
compares a sweep's jobs over seeds."""
