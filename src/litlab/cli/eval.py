"""litlab-eval: test a trained run again, with that run's own config."""

import sys

import hydra
from omegaconf import DictConfig

from litlab import CONFIG_DIR
from litlab.cli import check_command, user_errors


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def run(cfg: DictConfig) -> None:
    with user_errors():
        from litlab.inference.runs import evaluate  # torch and Lightning: only once it runs

        evaluate(cfg)


def main() -> None:
    with user_errors():
        check_command(sys.argv, "eval")
    run()


if __name__ == "__main__":
    main()
