"""litlab-predict: JSON lines of class predictions; one `error:` line per unreadable input."""

import json
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from litlab import CONFIG_DIR
from litlab.cli import check_command, user_errors
from litlab.errors import LitlabError
from litlab.files import input_list


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
def run(cfg: DictConfig) -> None:
    with user_errors():
        from litlab.inference.predict import predict  # torch and Lightning: only once it runs

        records = predict(cfg)
    for record in records:
        print(json.dumps(record))
    failed = [r for r in records if "error" in r]
    for record in failed:
        print(f"error: {record['input']}: {record['error']}", file=sys.stderr)
    if failed:  # the rest was predicted; the status still says something was not
        sys.exit(1)


def main() -> None:
    with user_errors():
        cfg = check_command(sys.argv, "predict")
        if cfg is not None:
            if OmegaConf.is_missing(cfg, "inputs"):
                raise LitlabError(
                    "say what to classify: inputs=<file or folder> or inputs=[a,b,...]"
                )
            input_list(cfg.inputs)  # an empty folder: nothing to do, and nothing written
    run()


if __name__ == "__main__":
    main()
