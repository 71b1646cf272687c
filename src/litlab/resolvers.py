"""OmegaConf resolvers the configs use; imported wherever a config is composed."""

import secrets

from omegaconf import OmegaConf

# A short random id per process: run directories started in the same second stay apart.
if not OmegaConf.has_resolver("run_id"):
    OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)
