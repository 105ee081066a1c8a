"""A tiny stand-in for ImageNet and its shifts in the official layouts, made from scikit-image's sample photos.

    .venv/bin/python scripts/imagenet_standin.py OUT [--per-class 2] [--corruptions fog,contrast]

writes
    OUT/val/<wnid>/*.JPEG                       full-size photos (ImageNet val: ImageFolder by wnid)
    OUT/imagenet-c/<corruption>/<s>/<wnid>/*.JPEG  224 x 224 (Resize 256 + CenterCrop 224, then corrupted, as
                                                the official files), severities 1-5
    OUT/imagenet-a/<wnid>/*.jpg                 photos under 2 of ImageNet-A's 200 wnids
    OUT/imagenet-p/<perturbation>/<wnid>/*.mp4  31-frame 224 x 224 H.264 sequences

Nothing is downloaded: the photos ship with scikit-image. The classes are the first wnids of ImageNet-1k; the
labels are arbitrary (these are photographs of a cat, a coffee cup, an astronaut...), so accuracies on it mean
nothing: it exists to run the ImageNet workflow end to end (docs/imagenet.md) and in the tests.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "camera",
          "coins", "horse", "colorwheel")  # colour and grey photos that ship inside scikit-image (no pooch download)
WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475")  # ImageNet-1k classes 0..4
A_WNIDS = ("n01498041", "n01531178")  # two of ImageNet-A's 200 classes (ImageNet-1k indices 6 and 11)


def photos() -> list[np.ndarray]:
    """scikit-image's colour sample photos as uint8 [H, W, 3]."""
    from skimage import data

    out = []
    for name in PHOTOS:
        image = getattr(data, name)()
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        out.append(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    return out


def center_224(image: np.ndarray) -> np.ndarray:
    """Resize the short side to 256 and center crop 224 (how the official -C / -P images were made)."""
    img = Image.fromarray(image)
    scale = 256 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
    left, top = (img.width - 224) // 2, (img.height - 224) // 2
    return np.asarray(img.crop((left, top, left + 224, top + 224)))


def make(out: Path, per_class: int = 2, corruptions: tuple[str, ...] = ("fog", "contrast"),
         perturbations: tuple[str, ...] = ("brightness", "rotate")) -> dict[str, Path]:
    """Write the stand-in trees under `out`; returns their roots {"val", "imagenet-c", "imagenet-a", "imagenet-p"}."""
    import torch

    from eval.corruptions import corrupt
    from eval.corruptions.perturbations import generate_sequences
    from eval.imagenet_p import write_video

    images = photos()
    crops = [center_224(p) for p in images]
    roots = {k: out / k for k in ("val", "imagenet-c", "imagenet-a", "imagenet-p")}
    k = 0
    for wnid in WNIDS:
        for j in range(per_class):
            i = k % len(images)
            (roots["val"] / wnid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(roots["val"] / wnid / f"ILSVRC2012_val_{k:08d}.JPEG", quality=90)
            batch = torch.from_numpy(crops[i]).permute(2, 0, 1).unsqueeze(0)
            for c in corruptions:
                for s in range(1, 6):
                    x = corrupt(batch, c, s, [k], seed=0)[0].permute(1, 2, 0).numpy()
                    folder = roots["imagenet-c"] / c / str(s) / wnid
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(x).save(folder / f"ILSVRC2012_val_{k:08d}.JPEG", quality=85)
            for name in perturbations:
                seq = generate_sequences(batch, name, [k], seed=0)[0].permute(0, 2, 3, 1).numpy()
                write_video(roots["imagenet-p"] / name / wnid / f"{k}.mp4", seq)
            k += 1
    for j, wnid in enumerate(A_WNIDS):
        folder = roots["imagenet-a"] / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(images[(j * per_class + i + 3) % len(images)]).save(folder / f"a{i}.jpg", quality=90)
    return roots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--corruptions", default="fog,contrast")
    parser.add_argument("--perturbations", default="brightness,rotate")
    args = parser.parse_args()
    roots = make(args.out, args.per_class, tuple(args.corruptions.split(",")), tuple(args.perturbations.split(",")))
    for name, root in roots.items():
        print(f"{name}: {root}")


if __name__ == "__main__":
    main()
