"""litlab-predict: pictures drawn here and lines of text, through a really trained run."""

import io
import json
import math
import shutil

import pytest
import torch
from conftest import DATA_DIR, run_cli
from PIL import Image, ImageDraw

from litlab.data.mnist import mnist_like
from litlab.errors import LitlabError
from litlab.inference.predict import Predictor


def arc(cx, cy, rx, ry, start, end, n=24):
    """Points on an ellipse from angle `start` to `end` (degrees; 0 = right, 90 = down)."""
    angles = (start + (end - start) * i / n for i in range(n + 1))
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a))) for a in angles
    ]


# Pen strokes of each digit in a 100 x 140 box, drawn as a hand would write it.
STROKES = {
    0: [arc(50, 70, 30, 55, 0, 360)],
    1: [[(40, 30), (55, 15), (55, 125)]],
    2: [arc(50, 45, 30, 30, 200, 400) + [(20, 125), (82, 125)]],
    3: [arc(48, 42, 28, 27, 210, 450), arc(48, 95, 32, 30, 270, 510)],
    4: [[(62, 15), (18, 90), (85, 90)], [(65, 50), (65, 125)]],
    5: [[(78, 15), (30, 15), (26, 62)] + arc(48, 90, 32, 32, 235, 500)],
    6: [[(70, 15), (30, 70)] + arc(50, 95, 28, 30, 180, 540)],
    7: [[(20, 18), (82, 18), (40, 125)]],
    8: [arc(50, 42, 24, 27, 0, 360), arc(50, 96, 30, 29, 0, 360)],
    9: [arc(50, 45, 28, 28, 0, 360), [(78, 45), (62, 125)]],
}


def draw_digit(digit, *, canvas=(300, 360), at=(50, 40), scale=2.0, pen=14, ink=0, paper=255):
    """A large, clear digit written with a round pen; `ink` and `paper` set the colours."""
    mode = "RGBA" if isinstance(paper, tuple) and len(paper) == 4 else "RGB"
    image = Image.new("L" if isinstance(paper, int) else mode, canvas, paper)
    draw = ImageDraw.Draw(image)
    for stroke in STROKES[digit]:
        points = [(at[0] + x * scale, at[1] + y * scale) for x, y in stroke]
        draw.line(points, fill=ink, width=2 * pen, joint="curve")
        for x, y in (points[0], points[-1]):  # round ends
            draw.ellipse((x - pen, y - pen, x + pen, y + pen), fill=ink)
    return image


def as_jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return Image.open(io.BytesIO(buffer.getvalue()))


VARIANTS = {  # the same digits, drawn as people's pictures come
    "light_on_dark": lambda d: draw_digit(d, ink=255, paper=0),
    "jpeg": lambda d: as_jpeg(draw_digit(d)),
    "transparent": lambda d: draw_digit(d, ink=(0, 0, 0, 255), paper=(0, 0, 0, 0)),
    "coloured_off_centre": lambda d: draw_digit(
        d, canvas=(800, 500), at=(500, 60), ink=(30, 30, 140), paper=(250, 240, 200)
    ),
    "small": lambda d: draw_digit(d, canvas=(40, 46), at=(8, 6), scale=0.25, pen=2),
}


def test_clear_digits_and_bad_files_in_one_batch(mnist_mlp_run, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for digit in range(10):
        draw_digit(digit).save(inputs / f"digit_{digit}.png")
    (inputs / "notes.png").write_text("a shopping list, not a picture")
    whole = (inputs / "digit_3.png").read_bytes()
    (inputs / "cut.png").write_bytes(whole[: len(whole) // 2])  # a corrupt (truncated) PNG
    result = run_cli(
        "litlab-predict",
        f"run_dir={mnist_mlp_run}",
        f"inputs=[{inputs},{tmp_path / 'missing.png'}]",
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    assert result.returncode == 1, result.stderr[-2000:]  # some inputs failed, not the run
    records = {
        r["input"].rsplit("/", 1)[-1]: r for r in map(json.loads, result.stdout.splitlines())
    }
    assert len(records) == 13
    for digit in range(10):
        record = records[f"digit_{digit}.png"]
        assert (record["predicted_index"], record["predicted_class"]) == (digit, str(digit)), record
        assert sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert "not a readable image" in records["notes.png"]["error"]
    assert "truncated" in records["cut.png"]["error"]
    assert records["missing.png"]["error"] == "no such file"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and all(".png: " in line for line in errors)
    saved = (tmp_path / "predict" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in saved] == list(map(json.loads, result.stdout.splitlines()))


def test_pictures_are_drawn_as_the_training_data(mnist_mlp_run):
    predictor = Predictor(mnist_mlp_run)
    plain = [draw_digit(d) for d in range(10)]
    expected = torch.stack([predictor.data.draw(image) for image in plain])
    assert expected.shape == (10, 1, 28, 28) and expected.dtype == torch.uint8
    for digit, pixels in enumerate(expected):  # light on black, in MNIST's 20 x 20 box
        assert pixels[0, :, 0].max() == 0 and pixels[0, 0].max() == 0 and pixels.max() > 200
        rows, cols = pixels[0].nonzero().unbind(1)
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21, digit
    for name, variant in VARIANTS.items():
        pixels = torch.stack([predictor.data.draw(variant(d)) for d in range(10)])
        if name != "small":  # the same strokes, however presented: the same image
            difference = (pixels.float() - expected.float()).abs().mean()
            assert difference < 3, (name, difference)
        predicted = predictor.images(pixels).argmax(dim=1)
        assert predicted.tolist() == list(range(10)), name


def test_mnist_test_digits_on_paper_are_classified_as_well_as_the_test_set(mnist_mlp_run):
    """Real test digits, saved as dark ink on white paper: once drawn again the way MNIST
    draws them, the run classifies them about as well as its test set."""
    from litlab.data import MNISTDataModule

    images, labels = MNISTDataModule(seed=0, data_dir=str(DATA_DIR)).load_split("test")
    pictures = [Image.fromarray(255 - image[0].numpy()) for image in images[:500]]
    accuracy = (Predictor(mnist_mlp_run).images(pictures).argmax(1) == labels[:500]).float()
    test_acc = json.loads((mnist_mlp_run / "metrics.json").read_text())["metrics"]["test/acc"]
    assert accuracy.mean() >= test_acc - 0.02


def test_text_lines_go_through_the_runs_own_tokenizer(bbc_lstm_run, tmp_path):
    from tokenizers import Tokenizer

    texts = tmp_path / "news.txt"
    lines = ["Shares in the bank fell after profits slumped.", "", "The striker scored twice."]
    texts.write_text("\n".join(lines) + "\n")
    result = run_cli(
        "litlab-predict",
        f"run_dir={bbc_lstm_run}",
        f"inputs={texts}",
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    assert result.returncode == 1, result.stderr[-2000:]
    first, empty, third = map(json.loads, result.stdout.splitlines())
    assert empty == {"input": f"{texts}:2", "error": "empty line: there is nothing to classify"}
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {texts}:2: empty line: there is nothing to classify"
    ]
    assert (first["input"], first["text"], third["input"]) == (f"{texts}:1", lines[0], f"{texts}:3")
    classes = json.loads((bbc_lstm_run / "labels.json").read_text())
    assert list(first["probabilities"]) == classes

    # The same numbers by hand: the run's tokenizer file, the run's net.
    predictor = Predictor(bbc_lstm_run)
    tokenizer = Tokenizer.from_file(str(bbc_lstm_run / "tokenizer.json"))
    for record, text in ((first, lines[0]), (third, lines[2])):
        ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.no_grad():
            expected = predictor.model.net((ids, torch.tensor([ids.shape[1]]))).softmax(-1)[0]
        got = torch.tensor([record["probabilities"][c] for c in classes])
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
        assert record["predicted_class"] == classes[int(expected.argmax())]


def test_a_run_without_a_checkpoint(mnist_mlp_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(mnist_mlp_run / "config.yaml", run_dir)
    result = run_cli(
        "litlab-predict",
        f"run_dir={run_dir}",
        f"inputs={run_dir}",
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no checkpoint at" in errors[0], result.stderr[-2000:]
    assert result.stdout == ""


def test_an_empty_folder_is_refused_before_anything_is_written(mnist_mlp_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden").write_text("not an input")
    result = run_cli(
        "litlab-predict",
        f"run_dir={mnist_mlp_run}",
        f"inputs=[{empty}]",
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert f"inputs={empty}: the folder holds no files to classify" in errors[0]
    assert result.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    (empty / "cats").mkdir()  # a folder's folders are not read: the line says so
    result = run_cli("litlab-predict", f"run_dir={mnist_mlp_run}", f"inputs={empty}", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert f"its folders are not read: name them, inputs=[{empty}/cats,...]" in errors[0]
    (empty / "cats").rmdir()
    result = run_cli("litlab-predict", f"run_dir={mnist_mlp_run}", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and errors == [
        "error: say what to classify: inputs=<file or folder> or inputs=[a,b,...]"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_a_text_column_for_an_image_run_is_refused(mnist_mlp_run):
    with pytest.raises(LitlabError, match="text_column=review: the run's data .* leave text_col"):
        Predictor(mnist_mlp_run, text_column="review")


NEWS = """\
id,headline,label
1,"Shares in the bank fell after profits slumped, the chairman said.",business
2,"The striker scored twice, and the team went top of the league.",sport
3,,tech
"""


def test_a_csv_is_read_by_its_text_column_without_its_header(bbc_lstm_run, tmp_path):
    table = tmp_path / "news.csv"
    table.write_text(NEWS)
    predict = tmp_path / "predict"
    result = run_cli(
        "litlab-predict",
        f"run_dir={bbc_lstm_run}",
        f"inputs={table}",
        "text_column=headline",
        f"hydra.run.dir={predict}",
    )
    assert result.returncode == 1, result.stderr[-2000:]  # the row without a text
    first, second, third = map(json.loads, result.stdout.splitlines())
    assert [first["input"], second["input"]] == [f"{table}:2", f"{table}:3"]
    assert first["text"].startswith("Shares") and second["text"].startswith("The striker")
    classes = json.loads((bbc_lstm_run / "labels.json").read_text())
    for record in (first, second):
        assert record["predicted_class"] == classes[record["predicted_index"]]
        assert list(record["probabilities"]) == classes
    assert third == {"input": f"{table}:4", "error": "no text in column 'headline'"}
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {table}:4: no text in column 'headline'"]

    # Without text_column= the run's own (`text`), which this file lacks: the file fails alone.
    lines = tmp_path / "news.txt"
    lines.write_text("The striker scored twice.\n")
    result = run_cli(
        "litlab-predict",
        f"run_dir={bbc_lstm_run}",
        f"inputs=[{table},{lines}]",
        f"hydra.run.dir={tmp_path / 'again'}",
    )
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {table}: no column 'text' (columns: id, headline, label); pass text_column="
    ]
    assert json.loads(result.stdout.splitlines()[1])["input"] == f"{lines}:1"


def test_a_blank_picture_is_refused_alone():
    with pytest.raises(ValueError, match="no object found"):
        mnist_like(Image.new("L", (60, 60), 255))
