import hydra
from omegaconf import DictConfig

from litlab import CONFIG_DIR
from litlab.cli import user_errors
from litlab.tasks import train


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    with user_errors():
        metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
