"""Measurement: how far the held-statistics input-gradient is from the fully coupled one.

    python benchmarks/batch_norm_coupling.py --data .data/cifar10.npz
    python benchmarks/batch_norm_coupling.py               # random images, labelled as such

In train mode a batch-norm network's logits of image i depend on the whole batch. pagcore's
per-image gradient holds the batch statistics fixed (pagcore.paper.objective.class_input_gradients);
the fully coupled derivative d f(X)[i, c] / d x_i also follows x_i's own 1/B share of the
statistics. This script computes both for every image of one batch of the paper's size (64) and
``--classes`` target classes each, on a ResNet-18 at initialisation and after ``--steps`` plain
cross-entropy SGD steps, and prints the cosine between them (mean, minimum). The result is saved
to benchmarks/results/ with the device, torch version and git sha. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pagcore.data import as_float, load_dataset  # noqa: E402
from pagcore.paper.models import build_model  # noqa: E402
from pagcore.paper.objective import class_input_gradients, sample_target_classes  # noqa: E402
from pagcore.store.provenance import device_description, git_revision, utc_now, write_json_atomic  # noqa: E402


def fully_coupled(model: torch.nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """d f(X)[i, classes[i, j]] / d x_i for every (i, j), all in one batched backward pass."""
    batch_size, k = classes.shape
    x = x.detach().requires_grad_(True)
    logits = model(x)
    cotangents = torch.zeros(batch_size * k, *logits.shape)
    rows = torch.arange(batch_size).repeat_interleave(k)
    cotangents[torch.arange(batch_size * k), rows, classes.flatten()] = 1.0
    (grads,) = torch.autograd.grad(logits, x, cotangents, is_grads_batched=True)
    return grads[torch.arange(batch_size * k), rows].view(batch_size, k, *x.shape[1:])


def cosine_summary(model, x, classes) -> dict[str, float]:
    state = {name: b.clone() for name, b in model.named_buffers()}
    _, held = class_input_gradients(model, x, classes, strategy="vmap", create_graph=False)
    coupled = fully_coupled(model, x, classes)
    model.load_state_dict({**model.state_dict(), **state})  # the two forwards moved the running stats
    cos = F.cosine_similarity(held.flatten(2), coupled.flatten(2), dim=2).flatten().tolist()
    return {"mean": statistics.fmean(cos), "min": min(cos), "max": max(cos)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a CIFAR-10 .npz; random images without it")
    parser.add_argument("--width", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10, help="target classes per image")
    parser.add_argument("--steps", type=int, default=200, help="cross-entropy SGD steps before the second measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(args.seed)
    if args.data:
        data = load_dataset("cifar10", args.data)
        images, labels, data_name = data.x_train, data.y_train, f"CIFAR-10 training images ({args.data.name})"
    else:
        images = (
            torch.rand(args.steps * args.batch_size + args.batch_size, 3, 32, 32, generator=generator) * 255
        ).byte()
        labels = torch.randint(10, (len(images),), generator=generator)
        data_name = "random images (not CIFAR-10)"

    results = []
    for width in args.width:
        torch.manual_seed(args.seed)
        model = build_model("cifar10", width=width).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        probe = torch.randperm(len(images), generator=generator)[: args.batch_size]
        x_probe = as_float(images[probe])
        classes = sample_target_classes(args.batch_size, 10, args.classes, generator=generator)
        start = time.perf_counter()
        row = {"width": width, "at_init": cosine_summary(model, x_probe, classes)}
        for _ in range(args.steps):
            index = torch.randint(len(images), (args.batch_size,), generator=generator)
            loss = F.cross_entropy(model(as_float(images[index])), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        row[f"after_{args.steps}_steps"] = cosine_summary(model, x_probe, classes)
        row["seconds"] = round(time.perf_counter() - start, 1)
        results.append(row)
        print(row, flush=True)

    record = {
        "what": "cosine between the held-statistics and the fully coupled per-image input-gradient, train mode",
        "data": data_name,
        "batch_size": args.batch_size,
        "classes_per_image": args.classes,
        "results": results,
        "device": device_description(torch.device("cpu")),
        "torch": torch.__version__,
        "git_sha": git_revision(),
        "date": utc_now(),
    }
    out = ROOT / "benchmarks" / "results" / f"batch_norm_coupling-{utc_now()[:10]}.json"
    write_json_atomic(out, record)
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
