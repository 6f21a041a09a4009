"""Final evaluation: float32 even inside autocast, the paper's radii, settings of the stronger PGD."""

import pytest
import torch
from tiny_models import trained_image_model

from pagcore.evaluate.final import (
    PAPER_PGD_EPS,
    STANDARD_EPS,
    evaluate,
    load_pag_grid,
    load_pag_grid_index,
    paper_attacks,
    save_pag_grid,
)
from pagcore.evaluate.stored import EvaluationSubset


def test_evaluation_ignores_an_autocast_region_around_it():
    model, x, y = trained_image_model()
    attacks = {"l2": paper_attacks("cifar10", steps=5)["l2"]}
    plain = evaluate(model, x, y, attacks, progress=False, batch_size=16)
    seen = []
    model[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16  # the region really is reduced precision
        seen.clear()
        inside = evaluate(model, x, y, attacks, progress=False, batch_size=16)
    assert seen and set(seen) == {torch.float32}  # every forward pass of the evaluation ran in float32
    assert inside == plain


def test_paper_pgd_uses_0031_and_the_standard_radius_is_8_over_255():
    assert PAPER_PGD_EPS["cifar10"]["linf"] == 0.031 and STANDARD_EPS["cifar10"]["linf"] == 8 / 255
    assert paper_attacks("stl10")["l2"].eps == 1.5 and paper_attacks("cifar10")["linf"].eps == 0.031


def test_subsets_are_fixed_by_their_seed():
    a, b, c = (EvaluationSubset.draw(1000, 50, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.indices, b.indices) and a.record() == b.record()
    assert a.record()["indices_sha256"] != c.record()["indices_sha256"]
    assert len(set(a.indices.tolist())) == 50 and a.indices.tolist() == sorted(a.indices.tolist())
    assert EvaluationSubset.draw(30, None).record()["size"] == 30 == EvaluationSubset.draw(30, 100).record()["size"]


@pytest.mark.parametrize("channels", [1, 3])
def test_a_stored_pag_grid_comes_back_pixel_for_pixel(tmp_path, channels):
    grid = torch.rand(3, 11, channels, 5, 7)
    save_pag_grid(tmp_path, grid, torch.tensor([4, 0, 9]))
    back = load_pag_grid(tmp_path)
    assert back.shape == grid.shape
    assert torch.equal(back, grid.mul(255).round().div(255))  # 8-bit pixels, nothing else lost
    assert load_pag_grid_index(tmp_path) == [4, 0, 9]
    assert load_pag_grid(tmp_path / "elsewhere") is None and load_pag_grid_index(tmp_path / "elsewhere") is None
