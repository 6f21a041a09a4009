"""The grouped training configuration: presets, paper defaults, validation, identity, the CLI."""

import argparse
from dataclasses import fields

import pytest

from pagcore import config as cfg
from pagcore.base.validation import ConfigError
from pagcore.config import GROUPS, SCALES, VIT_DEPTH, VIT_WIDTH, TrainConfig, add_arguments, from_arguments, knob_names


def test_paper_scale_fills_the_papers_values():
    c = TrainConfig.from_flat({"dataset": "stl10", "source": "one_image"}).resolve()
    assert (c.data.width, c.schedule.epochs, c.schedule.batch_size) == (64, 100, 32)
    assert c.objective.lam == 0.25  # Table 3, STL-10, one image
    assert c.objective.classes_per_image == 10  # the full sum
    assert c.adversary.eps == pytest.approx(8 / 255) and c.adversary.steps == 7


def test_cpu_scale_takes_its_preset_and_explicit_values_win():
    preset = SCALES["cpu"]["cifar10"]
    c = TrainConfig.from_flat({"scale": "cpu"}).resolve()
    assert (c.data.width, c.schedule.epochs) == (preset.width, preset.epochs)
    assert c.objective.classes_per_image == (preset.classes_per_image or 10)
    assert c.objective.lam == 0.4  # the method stays the paper's
    explicit = TrainConfig.from_flat({"scale": "cpu", "width": 16, "epochs": 3, "classes_per_image": 10}).resolve()
    assert (explicit.data.width, explicit.schedule.epochs, explicit.objective.classes_per_image) == (16, 3, 10)


def test_resolve_is_idempotent():
    once = TrainConfig.from_flat({"scale": "cpu", "objective": "adversarial", "threat": "l2"}).resolve()
    assert once.resolve() == once


@pytest.mark.parametrize(
    "flat, parameter",
    [
        ({"batch_size": 0}, "batch_size"),  # rejected, not replaced by the paper's 64
        ({"epochs": 0}, "epochs"),
        ({"width": -1}, "width"),
        ({"objective": "pag", "lam": 0.0}, "lam"),
        ({"objective": "cross_entropy", "lam": 0.3}, "lam"),
        ({"source": "rigd"}, "teacher"),
        ({"classes_per_image": 11}, "classes_per_image"),
        ({"dataset": "mnist"}, "dataset"),
        ({"scale": "laptop"}, "scale"),
        ({"gradient": "softmax"}, "gradient"),
        ({"lr_milestones": [0.5], "lr_factors": [0.1, 0.01]}, "lr_milestones"),
    ],
)
def test_bad_values_are_rejected_with_their_name(flat, parameter):
    with pytest.raises(ConfigError, match=parameter):
        TrainConfig.from_flat(flat).resolve()


def test_unknown_knob_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown parameter.*'lamda'.*lam"):
        TrainConfig.from_flat({"lamda": 0.4})


def test_identity_is_what_was_trained():
    pag = TrainConfig.from_flat({"scale": "cpu"}).resolve()
    assert "adversary" not in pag.identity()  # adversarial training's knobs do not name a PAG run
    assert pag.identity() != TrainConfig.from_flat({"scale": "paper"}).resolve().identity()
    vanilla = TrainConfig.from_flat({"objective": "cross_entropy"}).resolve().identity()
    assert "source" not in vanilla and "lam" not in vanilla
    teacher = TrainConfig.from_flat({"objective": "adversarial", "threat": "l2"}).resolve().identity()
    assert teacher["adversary"]["threat"] == "l2"


def test_every_knob_is_a_command_line_option_and_a_notebook_parameter():
    """Derived, not copied: every field of every group reaches the CLI and from_flat."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    dests = {a.dest for a in parser._actions}
    for group in GROUPS.values():
        for f in fields(group):
            assert f.name in dests
    assert set(knob_names()) - {"scale"} <= dests


def test_command_line_values_reach_the_config():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--scale",
            "cpu",
            "--dataset",
            "stl10",
            "--lam",
            "0.1",
            "--no-augment",
            "--lr-milestones",
            "0.3",
            "--lr-factors",
            "0.5",
            "--objective",
            "adversarial",
            "--threat",
            "l2",
            "--adversary-steps",
            "2",
            "--lam",
            "0",
        ]
    )
    c = from_arguments(args).resolve()
    assert c.scale == "cpu" and c.data.dataset == "stl10" and c.data.augment is False
    assert c.schedule.lr_milestones == [0.3] and c.schedule.lr_factors == [0.5]
    assert (c.adversary.threat, c.adversary.steps, c.adversary.eps) == ("l2", 2, 1.5)
    # Options not given stay unset, so the dataclass defaults and the preset apply.
    untouched = from_arguments(parser.parse_args([]))
    assert untouched == TrainConfig()


def test_a_new_knob_reaches_cli_and_notebook(monkeypatch):
    """Adding a field to a group is all it takes: the parser and from_flat see it."""
    from dataclasses import make_dataclass

    extended = make_dataclass(
        "DataConfig",
        [(f.name, f.type, f) for f in fields(cfg.DataConfig)]
        + [("label_smoothing", "float", cfg.knob(0.0, "a hypothetical new knob"))],
        frozen=True,
    )
    monkeypatch.setitem(cfg.GROUPS, "data", extended)
    monkeypatch.setattr(cfg, "DataConfig", extended)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--label-smoothing", "0.1"])
    assert args.label_smoothing == 0.1
    assert TrainConfig.from_flat({"label_smoothing": 0.1}).data.label_smoothing == 0.1


def test_each_dataset_has_its_own_preset_at_each_scale(monkeypatch):
    from dataclasses import replace

    for scale in cfg.SCALE_NAMES:
        for dataset in ("cifar10", "stl10"):
            assert cfg.preset_for(scale, dataset) is SCALES[scale][dataset]
    cifar_before = TrainConfig.from_flat({"scale": "cpu"}).resolve()
    monkeypatch.setitem(SCALES["cpu"], "stl10", replace(SCALES["cpu"]["stl10"], width=12, epochs=40))
    stl = TrainConfig.from_flat({"scale": "cpu", "dataset": "stl10"}).resolve()
    assert (stl.data.width, stl.schedule.epochs) == (12, 40)
    assert TrainConfig.from_flat({"scale": "cpu"}).resolve() == cifar_before  # CIFAR-10's runs keep their names
    with pytest.raises(ConfigError, match="dataset"):
        cfg.preset_for("cpu", "imagenet")


def test_the_vit_is_named_apart_and_the_resnet_keeps_its_names():
    resnet = TrainConfig.from_flat({"scale": "cpu"}).resolve()
    assert "architecture" not in resnet.identity() and "depth" not in resnet.identity()
    vit = TrainConfig.from_flat({"architecture": "vit", "scale": "paper"}).resolve()
    assert (vit.data.width, vit.data.depth) == (384, 7)  # the authors' configuration
    assert vit.identity()["architecture"] == "vit" and vit.readable_name().startswith("cifar10-vit7-w384-")
    assert set(VIT_WIDTH) == set(VIT_DEPTH) == set(SCALES)  # every scale has its ViT
    cpu = TrainConfig.from_flat({"architecture": "vit", "scale": "cpu"}).resolve()
    assert (cpu.data.width, cpu.data.depth) == (VIT_WIDTH["cpu"], VIT_DEPTH["cpu"])  # the pilot's choice
    assert cpu.readable_name().startswith(f"cifar10-cpu-vit{VIT_DEPTH['cpu']}-w{VIT_WIDTH['cpu']}-")
    with pytest.raises(ConfigError, match="depth"):
        TrainConfig.from_flat({"depth": 4}).resolve()
