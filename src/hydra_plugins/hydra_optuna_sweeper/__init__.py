"""The sweeper class hydra-optuna-sweeper's configs name (`hydra.sweeper._target_`, as
lightning-hydra-template's search sets it): litlab's Optuna sweeper, which takes their keys."""
