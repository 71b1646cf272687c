"""What `litlab-train` prints: a header, the bar, the results, each message once, no noise."""

import re

from conftest import DATA_DIR, need_data, run_cli

NOISE = (
    "TPU available",
    "GPU available",
    "Tip:",
    "LeafSpec",
    "FLOPs",
    "srun",
    "Seed set",
    "override",
)


def test_a_run_prints_its_header_then_its_results_each_line_once(tmp_path):
    need_data("MNIST")
    run_dir = tmp_path / "run"
    result = run_cli(
        "litlab-train",
        "experiment=mlp_relu",
        "debug=limit",
        "trainer.max_epochs=1",
        f"paths.data_dir={DATA_DIR}",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    worded = [line for line in lines if re.search(r"[A-Za-z]{3}", line)]
    repeated = {line for line in worded if worded.count(line) > 1}
    assert not repeated, repeated
    assert not [line for line in worded if any(word in line for word in NOISE)]
    assert worded[0] == f"experiment mlp_relu · run {run_dir}"
    assert re.fullmatch(
        r"Classifier \(MLP\): [\d,]+ parameters · cpu · precision 32-true", worded[1]
    )
    assert f"run directory: {run_dir}" in worded


def test_missing_data_is_the_only_line_printed(tmp_path):
    result = run_cli(
        "litlab-train", f"paths.data_dir={tmp_path / 'none'}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: MNIST not found") and result.stderr.count("\n") == 1
