"""The explorers: set widget values from Python and check that what they show changes; the static
lambda slider of the built book: its pictures, its HTML and its sentence."""

import base64
import io
import json
import re
from dataclasses import replace

import pytest
import torch
from PIL import Image

from pagcore.book import slider, style
from pagcore.book.widgets import StoredRunsExplorer, ToyExplorer
from pagcore.evaluate.final import save_pag_grid
from pagcore.store.runs import RunStore
from pagcore.toy.experiment import ToyLambdaGrid, lambda_grid
from pagcore.toy.problem import ToyConfig, ToyMLP

SMALL = ToyConfig(epochs=15, train_per_mode=40, test_per_mode=20, pool_size=10)


def test_toy_explorer_retrains_when_a_control_changes():
    explorer = ToyExplorer(SMALL, seed=0)
    first_figure, first_status = explorer.figure, explorer.status.value
    assert explorer.result is not None and "under PGD" in first_status
    assert len(explorer.output.outputs) == 1  # the boundary plot

    explorer.lam.value = 0.0  # vanilla
    vanilla = dict(explorer.result)
    assert explorer.figure is not first_figure
    assert "λ = 0.00" in explorer.figure.axes[0].get_title()

    explorer.lam.value = 2.0
    explorer.source.value = "class_mean"
    assert "class_mean" in explorer.figure.axes[0].get_title()
    assert explorer.result != vanilla or explorer.status.value != first_status
    explorer.gradient.value = "log_softmax"
    assert len(explorer.output.outputs) == 1  # redrawn in place, not appended


def make_run(store, name, clean):
    run = store.create(name, {"epochs": 3, "name": name})
    run.write_json("record.json", {"kind": "real", "status": "complete", "sessions": []})
    run.write_json("metrics.json", {"clean": clean, "linf": clean / 4, "l2": clean / 2})
    run.artifacts.mkdir(parents=True, exist_ok=True)
    save_pag_grid(run.artifacts, torch.rand(1, 11, 3, 8, 8), None)
    return run


def test_stored_runs_explorer_shows_the_selected_run(tmp_path):
    store = RunStore(tmp_path)
    runs = {"λ = 0.1": make_run(store, "a", 0.9), "λ = 1": make_run(store, "b", 0.7), "λ = 10": None}
    explorer = StoredRunsExplorer(runs, class_names=tuple("abcdefghij"))
    assert list(explorer.slider.options) == ["λ = 0.1", "λ = 1"]  # the missing run is left out
    assert explorer.shown == "λ = 0.1"
    first = [o["data"].get("text/markdown", "") for o in explorer.output.outputs]
    explorer.slider.value = "λ = 1"
    assert explorer.shown == "λ = 1"
    second = [o["data"].get("text/markdown", "") for o in explorer.output.outputs]
    assert "`b`" in "".join(second) and "70.0%" in "".join(second) and first != second
    assert any("image/png" in o["data"] for o in explorer.output.outputs)


def test_stored_runs_explorer_without_runs_says_so():
    explorer = StoredRunsExplorer({"λ = 1": None})
    assert explorer.shown is None
    assert "No stored run" in explorer.output.outputs[0]["data"]["text/markdown"]


# The static lambda slider of the built book (pagcore.book.slider).


def linear_toy_model(w) -> ToyMLP:
    """Logits (0, w . x): class 1 where w . x > 0. The hidden layer passes x as ReLU(x), ReLU(-x)."""
    model = ToyMLP(hidden=4)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]]))
        model[0].bias.zero_()
        w = torch.tensor(w)
        model[2].weight.copy_(torch.stack([torch.zeros(4), torch.cat([w, -w])]))
        model[2].bias.zero_()
    return model.eval()


def test_gradient_field_points_towards_the_other_class():
    w = torch.tensor([2.0, -1.0])
    # An even number of points per side keeps the grid off the axes, where ReLU(x) has no slope.
    grid, gradients = slider.gradient_field(linear_toy_model(w.tolist()), points=6)
    assert grid.shape == gradients.shape == (36, 2)
    side = torch.sign(grid @ w)
    off_boundary = side != 0
    unit = gradients / gradients.norm(dim=1, keepdim=True)
    # From class 1 (w . x > 0) the other class lies along -w, from class 0 along +w.
    expected = -side.unsqueeze(1) * w / w.norm()
    torch.testing.assert_close(unit[off_boundary], expected[off_boundary])


def fake_grid(pgd, clean, alignment, lams=(0.0, 1.0, 3.0)) -> ToyLambdaGrid:
    metrics = [dict(clean=c, pgd=p, alignment=a) for c, p, a in zip(clean, pgd, alignment)]
    return ToyLambdaGrid(SMALL, 2, list(lams), [], metrics, (torch.zeros(0, 2), torch.zeros(0)), 0.0)


def test_lambda_grid_sentence_reads_the_grid():
    sentence = slider.lambda_grid_sentence(fake_grid([0.2, 0.9, 0.5], [1.0, 1.0, 0.95], [0.1, 0.5, 0.4]))
    assert sentence == (
        "As λ grows from 0 to 3, the PGD accuracy of the seed-2 model goes from 20.0% to 50.0% (highest, 90.0%, "
        "at λ = 1) and its PAG score from 0.10 to 0.40, while its clean accuracy ranges from 95.0% to 100.0%."
    )
    flat = slider.lambda_grid_sentence(fake_grid([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]))
    assert "clean accuracy stays at 100.0%." in flat and "(highest, 30.0%, at λ = 3)" in flat


def png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_slider_html_shows_the_first_frame_and_needs_nothing_from_outside():
    frames = [png("red"), png("blue"), png("green")]
    html = slider.slider_html(frames, ["λ = 0", "λ = 1", "λ = 3"])
    images = re.findall(r"<img [^>]*>", html)
    assert len(images) == 3
    assert ["display:block" in i for i in images] == [True, False, False]  # without JavaScript: the first
    assert 'type="range" min="0" max="2"' in html and ">λ = 0</output>" in html
    assert "max-width:30px" in images[0]  # shown at the picture's own width
    shown = [base64.b64decode(re.search(r"base64,([^\"]+)", i).group(1)) for i in images]
    assert shown == frames
    assert "http" not in html and "//" not in html.replace("://", "")  # no URL: works offline
    assert html == slider.slider_html(frames, ["λ = 0", "λ = 1", "λ = 3"])  # same frames, same ids
    assert slider.slider_html(frames[::-1], ["a", "b", "c"]).split('"')[3] != html.split('"')[3]
    with pytest.raises(ValueError, match="one label per frame"):
        slider.slider_html(frames, ["λ = 0"])


def test_toy_lambda_slider_has_one_frame_of_one_size_per_lambda():
    config = replace(SMALL, epochs=3)
    grid = lambda_grid(config, [0.0, 3.0])
    html = slider.toy_lambda_slider(grid)
    pictures = [
        Image.open(io.BytesIO(base64.b64decode(b)))
        for b in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', html)
    ]
    assert len(pictures) == 2
    ((width, height),) = {p.size for p in pictures}  # one size for every frame
    # A full-column figure of the book's style, shown at its own size in the text column.
    assert abs(width - slider.FRAME_SIZE[0] * style.DPI) <= 1 and abs(height - slider.FRAME_SIZE[1] * style.DPI) <= 1
    assert width <= style.COLUMN_PIXELS
    assert pictures[0].tobytes() != pictures[1].tobytes()  # the vanilla and the PAG model look different
    assert len(html) < 60_000 * len(pictures)  # palette PNGs: tens of KB a frame
    assert json.loads(re.search(r"var labels = (\[.*?\]);", html).group(1)) == ["λ = 0", "λ = 3"]
