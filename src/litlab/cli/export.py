"""litlab-export: a trained run's net for other runtimes, with a metadata file."""

import logging

import hydra
from omegaconf import DictConfig

from litlab import CONFIG_DIR
from litlab.cli import user_errors
from litlab.export import export

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    with user_errors():
        path = export(cfg.get("run_dir"), cfg.format, cfg.get("ckpt_path"), cfg.get("out_dir"))
    log.info("wrote %s and %s", path, path.parent / "metadata.json")


if __name__ == "__main__":
    main()
