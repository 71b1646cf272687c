"""litlab-export: each format, loaded back in its own runtime, against the trained PyTorch net."""

import json

import pytest
import torch
from conftest import compose, need_data, run_cli
from torch.nn.utils.rnn import pad_sequence

import litlab
from litlab.errors import LitlabError
from litlab.inference.export import FILES, PaddedRecurrent, export
from litlab.nets import RecurrentClassifier

pytest.importorskip("onnxruntime", reason="pip install 'litlab[export]'")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.* is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def seed_cnn_run(tmp_path_factory):
    """The article's CNN, briefly trained on MNIST (20 batches)."""
    need_data("MNIST")
    run_dir = tmp_path_factory.mktemp("seed_cnn")
    litlab.train(compose(run_dir, "experiment=seed_cnn", "debug=limit", "trainer.max_epochs=1"))
    return run_dir


@pytest.fixture
def runs(request, mnist_mlp_run, bbc_lstm_run):
    return {
        "mlp": mnist_mlp_run,
        "lstm": bbc_lstm_run,
        "seed_cnn": request.getfixturevalue("seed_cnn_run"),
    }


def run_exported(fmt, path, inputs):
    """The logits of the exported file, run as its users would run it."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))
        feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)}
        return torch.from_numpy(session.run(None, feed)[0])
    if fmt == "torchscript":
        return torch.jit.load(str(path))(*inputs)
    return torch.export.load(str(path)).module()(*inputs)


@pytest.mark.parametrize("net", ["seed_cnn", "mlp", "lstm"])
@pytest.mark.parametrize("fmt", list(FILES))
def test_export_matches_pytorch(runs, fmt, net):
    run_dir = runs[net]
    path = export(run_dir, fmt)
    assert path == run_dir / "export" / fmt / FILES[fmt]
    meta = json.loads((path.parent / "metadata.json").read_text())
    trained = litlab.load_run(run_dir).model.net
    generator = torch.Generator().manual_seed(1)
    if net == "lstm":  # another batch size and other lengths than the export traced
        assert meta["class_names"] == json.loads((run_dir / "labels.json").read_text())
        assert (path.parent / meta["tokenizer"]["file"]).read_text() == (
            run_dir / "tokenizer.json"
        ).read_text()
        sequences = [torch.randint(2, 10_000, (n,), generator=generator) for n in (5, 23, 1, 12)]
        inputs = (pad_sequence(sequences, batch_first=True), torch.tensor([5, 23, 1, 12]))
        expected = trained(inputs)  # packed, as trained
    else:
        assert meta["class_names"] == list("0123456789")
        assert meta["normalization"]["mean"] == pytest.approx(0.1307)
        assert meta["inputs"][0]["shape"] == ["batch", 1, 28, 28]
        inputs = (torch.randn(7, 1, 28, 28, generator=generator),)
        expected = trained(*inputs)
    with torch.no_grad():
        got = run_exported(fmt, path, inputs)
    torch.testing.assert_close(got, expected.detach(), atol=1e-4, rtol=0)


def test_a_bidirectional_net_is_refused():
    with pytest.raises(LitlabError, match="bidirectional"):
        PaddedRecurrent(RecurrentClassifier(vocab_size=20, bidirectional=True))


def test_the_command_line(bbc_lstm_run, tmp_path):
    out = tmp_path / "shipped"
    result = run_cli(
        "litlab-export",
        f"run_dir={bbc_lstm_run}",
        "format=onnx",
        f"out_dir={out}",
        f"hydra.run.dir={tmp_path / 'export'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "metadata.json",
        "model.onnx",
        "tokenizer.json",
    ]


def test_an_unknown_format(bbc_lstm_run):
    with pytest.raises(LitlabError, match="choose one of onnx, torchscript, exported_program"):
        export(bbc_lstm_run, "tflite")
    assert not (bbc_lstm_run / "export" / "tflite").exists()
