#!/usr/bin/env bash
# Split the shared lossless CIFAR-10 into two carry-sized folders for the GPU machine
# (a device call carries at most 64 MiB; the six mosaics are ~17 MB each):
#   .data/a: train-0..2          .data/b: train-3, train-4, test-0, labels, manifest, unpack.py
# On the machine, after both were carried (two calls back to back), run
#   tools/stage_cifar10.sh --unpack      # -> .data/cifar10.npz
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--unpack" ]; then
  mkdir -p .data/cifar10
  cp -f .data/a/* .data/b/* .data/cifar10/
  python .data/cifar10/unpack.py .data/cifar10.npz
  exit 0
fi
src="${1:-../shared/data/cifar10}"
mkdir -p .data/a .data/b
cp -f "$src"/train-0.webp "$src"/train-1.webp "$src"/train-2.webp .data/a/
cp -f "$src"/train-3.webp "$src"/train-4.webp "$src"/test-0.webp "$src"/labels.npz "$src"/MANIFEST.json "$src"/unpack.py .data/b/
du -sh .data/a .data/b
