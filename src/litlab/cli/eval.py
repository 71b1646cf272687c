import hydra
from omegaconf import DictConfig

from litlab import CONFIG_DIR
from litlab.cli import user_errors
from litlab.tasks import evaluate


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
