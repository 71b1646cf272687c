"""litlab-export: a trained run's net for other runtimes, with a metadata file."""

import logging
import sys

import hydra
from omegaconf import DictConfig

from litlab import CONFIG_DIR
from litlab.cli import check_command, user_errors

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def run(cfg: DictConfig) -> None:
    with user_errors():
        from litlab.inference.export import export  # torch and the exporters: only once it runs

        path = export(
            cfg.get("run_dir"), cfg.format, cfg.get("ckpt_path"), cfg.get("out_dir"), cfg.trust_run
        )
    log.info("wrote %s and %s", path, path.parent / "metadata.json")


def main() -> None:
    with user_errors():
        check_command(sys.argv, "export")
    run()


if __name__ == "__main__":
    main()
