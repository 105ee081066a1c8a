"""The ImageNet path gives the right number or a clear error (issue 12): identity of weights and images, classes
mapped by name, timm's own preprocessing, every image mode, other resolutions, default subsets, skipped suites,
early argument errors, offline weights. Images are made here (scikit-image photos, synthetic arrays)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn

import eval
from eval.cli import main as nst_eval
from eval.context import EvalContext
from eval.datasets import DataError, imagenet_c_set, imagenet_val_set, model_classes
from eval.store import ResultStore
from eval.suites import resolve_suites
from nst_core.images import EvalTransform, ImageError, open_rgb

SYNSETS = model_classes({"num_classes": 1000})
PICKED = [0, 5, 17, 100, 250, 411, 600, 777, 998, 999]  # 10 of the 1000 classes


def encode(index: int, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    """A flat image whose colour is its class index: R = index // 4, G = 64 * (index % 4)."""
    return np.broadcast_to(np.array([index // 4, 64 * (index % 4), 128], np.uint8), (size[1], size[0], 3)).copy()


class PixelClass(nn.Module):
    """Reads the class from the pixels (inverse of `encode`): always right whatever the labels say."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g = (x[:, :2].mean(dim=(2, 3)) * 255).round().unbind(1)
        index = (r * 4 + (g / 64).round()).long().clamp(0, self.num_classes - 1)
        return nn.functional.one_hot(index, self.num_classes).float()


META = {"name": "pixel", "num_classes": 1000, "input_size": [3, 16, 16], "sha256": "a" * 64, "crop_pct": 0.875,
        "interpolation": "bilinear", "source": "test"}


def tree(root: Path, folders: dict[str, int], per_class: int = 2, ext: str = ".png") -> Path:
    for folder, index in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            Image.fromarray(encode(index)).save(root / folder / f"{k}{ext}")
    return root


def top1(rows: list[dict], suite: str = "clean") -> float:
    return [r["value"] for r in rows if r["suite"] == suite and r["metric"] == "top1"][0]


# ---------------------------------------------------------------------------------------------------- 3. classes

def test_a_subset_of_wnid_folders_maps_to_timm_indices(tmp_path):
    val = tree(tmp_path / "val", {SYNSETS[i]: i for i in PICKED})
    rows = eval.evaluate(PixelClass().eval(), META, "clean", data=eval.DataSources(val=val), progress=False)
    assert top1(rows) == 100.0 and rows[0]["n"] == 20


def test_numeric_folders_are_class_indices_not_text_order(tmp_path):
    val = tree(tmp_path / "v2", {str(i): i for i in range(12)})  # ImageNetV2: 0, 1, ..., 11
    data = imagenet_val_set(val, META)
    assert data.labels.tolist() == [i for i in range(12) for _ in range(2)]
    rows = eval.evaluate(PixelClass().eval(), META, "clean", data=eval.DataSources(val=val), progress=False)
    assert top1(rows) == 100.0  # text order (0, 1, 10, 11, 2, ...) would score 16.7 %


def test_unknown_class_folders_are_an_error_listing_them(tmp_path):
    val = tree(tmp_path / "val", {"cats": 0, "n01440764": 0})
    with pytest.raises(DataError, match=r"class folders \['cats'\] are not among the model's classes"):
        imagenet_val_set(val, META)
    with pytest.raises(DataError, match=r"\['1000'\] are >= the model's 1000 classes"):
        imagenet_val_set(tree(tmp_path / "num", {"3": 3, "1000": 0}), META)


def test_training_refuses_a_test_dir_without_the_training_classes(tmp_path):
    from nst_core.config import DataConfig
    from nst_core.data import DataError, prepare_data

    train = tree(tmp_path / "train", {"cat": 1, "dog": 2, "eel": 3}, per_class=3)
    test = tree(tmp_path / "test", {"dog": 2, "eel": 3})
    cfg = DataConfig(dataset="imagefolder", data_dir=str(train), test_dir=str(test), labeled_per_class=1,
                     input_size=[3, 16, 16])
    with pytest.raises(DataError, match=r"test_dir .* missing \['cat'\]"):
        prepare_data(cfg, seed=0)


# ------------------------------------------------------------------------------------------------ 4. preprocessing

def photo() -> np.ndarray:
    from skimage import data

    return data.chelsea()[:, :, :3]  # 300 x 451, smooth fur


def test_timm_models_get_timm_own_eval_transform_squash_included(tmp_path):
    from nst_core import load_model

    path = tmp_path / "v" / "n01440764" / "cat.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(photo()).save(path)
    for name in ("convnext_tiny.fb_in22k_ft_in1k_384", "test_resnet.r160_in1k"):  # squash, center
        _, meta = load_model(f"timm:{name}")
        ours = torch.cat([x for x, _ in imagenet_val_set(path.parent.parent, meta).batches(4)])[0]
        cfg = timm.data.resolve_data_config({}, model=timm.create_model(name))
        reference = timm.data.create_transform(**cfg, is_training=False)  # float, normalised
        expected = reference(Image.open(path).convert("RGB"))
        mean, std = torch.tensor(cfg["mean"]).view(3, 1, 1), torch.tensor(cfg["std"]).view(3, 1, 1)
        assert ours.shape == expected.shape
        assert (ours.float() / 255 - (expected * std + mean)).abs().max() < 1e-5, name
    assert meta["crop_mode"] == "center"


def test_checkpoints_reuse_the_transform_of_their_run(tmp_path):
    from nst_core.checkpoint import save_checkpoint
    from nst_core.models import _load_checkpoint, model_from_meta

    meta = {"arch": "test_resnet", "num_classes": 3, "input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3,
            "config": {"data": {"crop_pct": 1.0, "crop_mode": "squash", "interpolation": "bicubic"}}}
    model = model_from_meta(meta)
    save_checkpoint(tmp_path / "gen0", model.model.state_dict(), meta)
    _, loaded = _load_checkpoint(tmp_path / "gen0")
    assert (loaded["crop_pct"], loaded["crop_mode"], loaded["interpolation"]) == (1.0, "squash", "bicubic")
    assert EvalTransform.from_meta(loaded) == EvalTransform((3, 32, 32), 1.0, "squash", "bicubic")


# ---------------------------------------------------------------------------------------------------- 5. decoding

def saved(tmp_path: Path, name: str, img: Image.Image) -> Path:
    path = tmp_path / name
    img.save(path)
    return path


def test_sixteen_and_thirty_two_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (64, 1))
    expected = np.round(ramp.astype(np.float64) * 255 / 65535)
    for name in ("g16.png", "g16.tif"):
        rgb = np.asarray(open_rgb(saved(tmp_path, name, Image.fromarray(ramp))))
        assert rgb.shape == (64, 64, 3) and np.abs(rgb[..., 0] - expected).max() <= 1, name
        assert (rgb == 255).mean() < 0.05  # the reported bug: 98.4 % white
    wide = ramp.astype(np.int32) * 32768  # 0 .. 2^31 - 32768, signed 32-bit TIFF
    rgb = np.asarray(open_rgb(saved(tmp_path, "g32.tif", Image.fromarray(wide))))
    assert np.abs(rgb[..., 0] - np.round(wide / (2**31 - 1) * 255)).max() <= 1
    with pytest.raises(ImageError, match=r"f\.tif: a 32-bit float image"):
        open_rgb(saved(tmp_path, "f.tif", Image.fromarray(ramp.astype(np.float32) / 65535)))


def test_alpha_palette_cmyk_and_bilevel_become_the_rgb_a_viewer_shows(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :4, 3] = 255  # left half opaque red, right half fully transparent (stored black)
    out = np.asarray(open_rgb(saved(tmp_path, "a.png", Image.fromarray(rgba, "RGBA"))))
    assert out[0, 0].tolist() == [200, 0, 0] and out[0, 7].tolist() == [255, 255, 255]
    la = np.asarray(open_rgb(saved(tmp_path, "la.png", Image.fromarray(rgba[..., [0, 3]], "LA"))))
    assert la[0, 0].tolist() == [200] * 3 and la[0, 7].tolist() == [255] * 3
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    palette.putpalette([10, 20, 30, 0, 0, 0] + [0] * 762)
    palette.info["transparency"] = 1
    p = np.asarray(open_rgb(saved(tmp_path, "p.png", palette)))
    assert p[0, 0].tolist() == [10, 20, 30] and p[0, 1].tolist() == [255, 255, 255]
    cmyk = np.asarray(open_rgb(saved(tmp_path, "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)))))
    assert np.abs(cmyk.astype(int) - [255, 0, 0]).max() <= 2
    bilevel = Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1")
    assert np.asarray(open_rgb(saved(tmp_path, "b.png", bilevel)))[0].tolist() == [[0, 0, 0], [255, 255, 255]]
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match=r"cannot read image .*junk\.png"):
        open_rgb(tmp_path / "junk.png")


# ------------------------------------------------------------------------------------------------- 6. resolution

@pytest.fixture(scope="module")
def c_tree(tmp_path_factory) -> Path:
    """Official-layout ImageNet-C stand-in: 224-px files, one class, a frame that only the whole image shows."""
    root = tmp_path_factory.mktemp("c")
    image = np.zeros((224, 224, 3), np.uint8)
    image[:16] = 255  # a white band along the top edge: a center crop of a smaller size never sees it
    for c in ("fog", "contrast"):
        for s in range(1, 6):
            (root / c / str(s) / SYNSETS[3]).mkdir(parents=True)
            Image.fromarray(image).save(root / c / str(s) / SYNSETS[3] / "x.png")
    return root


def test_other_sizes_get_the_official_images_resized_as_their_own_dataset(c_tree, tmp_path):
    small = {**META, "input_size": [3, 64, 64]}
    resized = imagenet_c_set(c_tree, "fog", 1, small, method="resize")
    cropped = imagenet_c_set(c_tree, "fog", 1, small, method="crop")
    x = next(resized.batches(4))[0][0]
    assert resized.name == "imagenet-c-resized" and x.shape == (3, 64, 64) and int(x[0, 0, 32]) > 200
    assert int(next(cropped.batches(4))[0][0][0, 0, 32]) == 0  # the middle 64 x 64 misses the band
    assert resized.identity != cropped.identity
    ctx = EvalContext(PixelClass().eval(), {**META, "input_size": [3, 260, 260]},
                      data=eval.DataSources(imagenet_c=c_tree), options=eval.EvalOptions(corruptions=["fog"]))
    _, plans, _ = resolve_suites("corruption", ctx)
    assert plans[0].dataset == "imagenet-c-resized" and plans[0].note == "official files, method resize"
    rows = eval.evaluate(PixelClass().eval(), {**META, "input_size": [3, 260, 260]}, "corruption",
                         data=eval.DataSources(imagenet_c=c_tree), corruptions=["fog", "contrast"], progress=False)
    assert {r["dataset"] for r in rows} == {"imagenet-c-resized"}
    assert json.loads(rows[0]["settings"])["transform"]["input_size"] == [3, 260, 260]


# ------------------------------------------------------------------------- 1, 2. identity of weights and images

def test_other_weights_of_one_architecture_never_read_back_each_others_cells(tmp_path):
    from safetensors.torch import save_file

    from nst_core import load_model

    val = tree(tmp_path / "val", {SYNSETS[i]: i for i in PICKED[:2]})
    store = ResultStore(tmp_path / "r.sqlite")
    model, meta = load_model("timm:test_resnet.r160_in1k")
    weights = tmp_path / "w.safetensors"
    save_file({k: v * 1.5 if v.is_floating_point() else v for k, v in model.model.state_dict().items()}, str(weights))
    other, other_meta = load_model("timm:test_resnet.r160_in1k", weights=weights)
    assert other_meta["name"] == "timm:test_resnet.r160_in1k@w.safetensors" and other_meta["sha256"] != meta["sha256"]
    eval.evaluate(model, meta, "clean", data=eval.DataSources(val=val), store=store, progress=False)
    eval.evaluate(other, other_meta, "clean", data=eval.DataSources(val=val), store=store, progress=False)
    shas = {r["checkpoint_sha256"] for r in store.rows(metric="top1")}
    assert shas == {meta["sha256"], other_meta["sha256"]}
    # the same name with other weights (another random init) gets the weights' hash in its name: reports tell apart
    fresh, fresh_meta = load_model("timm:test_resnet.r160_in1k")
    rows = eval.evaluate(fresh, fresh_meta, "clean", data=eval.DataSources(val=val), store=store, progress=False)
    assert rows[0]["model"] == f"timm:test_resnet.r160_in1k@random-init@{fresh_meta['sha256'][:8]}"
    again, again_meta = load_model("timm:test_resnet.r160_in1k", weights=weights)
    assert again_meta["sha256"] == other_meta["sha256"]  # same file, same identity: read back


def test_generated_and_official_imagenet_p_are_different_datasets(tmp_path):
    from test_perturbation_reader import ramp_frames, write_video

    val = tree(tmp_path / "val", {SYNSETS[i]: i for i in PICKED[:2]})
    for i, wnid in enumerate(SYNSETS[:2]):
        write_video(tmp_path / "p" / "rotate" / wnid / f"v{i}.mp4", ramp_frames(10 * i))
    meta = {**META, "input_size": [3, 48, 48]}
    store = ResultStore(tmp_path / "r.sqlite")
    options = dict(perturbations=["rotate"], progress=False, store=store)
    eval.evaluate(PixelClass().eval(), meta, "perturbation", data=eval.DataSources(val=val), **options)
    eval.evaluate(PixelClass().eval(), meta, "perturbation", data=eval.DataSources(val=val, imagenet_p=tmp_path / "p"),
                  imagenet_p_method="crop", **options)
    datasets = {(r["dataset"], r["data_id"]) for r in store.rows(metric="fp")}
    assert {d for d, _ in datasets} == {"imagenet-p/torch", "imagenet-p"} and len({i for _, i in datasets}) == 2


def test_same_name_other_files_is_another_data_id(tmp_path):
    one = imagenet_val_set(tree(tmp_path / "a", {SYNSETS[0]: 0}), META)
    two = imagenet_val_set(tree(tmp_path / "b", {SYNSETS[0]: 0}, per_class=3), META)
    resized = imagenet_val_set(tmp_path / "a", {**META, "input_size": [3, 24, 24]})
    assert len({one.identity, two.identity, resized.identity}) == 3
    assert imagenet_val_set(tmp_path / "a", META).identity == one.identity


# --------------------------------------------------------------------------- 7, 8. default subsets, skipped suites

def test_imagenet_defaults_bound_generated_sequences_and_attacks(tmp_path):
    val = tree(tmp_path / "val", {SYNSETS[i]: i for i in PICKED[:6]}, per_class=20)  # 120 images
    ctx = EvalContext(PixelClass().eval(), META, data=eval.DataSources(val=val))
    _, plans, _ = resolve_suites("robustness", ctx)
    by = {p.suite: p for p in plans}
    assert by["perturbation"].images == 100 and by["perturbation"].dataset == "imagenet-p/torch"
    assert by["adversarial"].images == 120 and by["corruption"].images == 120
    assert by["corruption"].dataset == "imagenet-c/torch" and by["corruption"].cache_bytes == 95 * 120 * 3 * 16 * 16


def test_a_suite_the_model_cannot_run_is_skipped_and_the_others_run(tmp_path):
    val = tree(tmp_path / "val", {"0": 0, "1": 1})
    a = tree(tmp_path / "a", {"n01498041": 6})
    five = {**META, "num_classes": 5, "classes": None}
    ctx = EvalContext(PixelClass(5).eval(), five, data=eval.DataSources(val=val, imagenet_a=a))
    suites, _, skipped = resolve_suites("robustness", ctx)
    assert "ImageNet-1k model" in skipped["natural-adversarial"]
    assert {"clean", "corruption", "adversarial", "perturbation"} <= {s.name for s in suites}
    with pytest.raises(Exception, match="ImageNet-1k model"):
        resolve_suites("natural-adversarial", ctx)


# ------------------------------------------------------------------------- 9, 10. arguments, dry run, offline

def exit_code(args: list[str]) -> int:
    try:
        return nst_eval(args)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code)


def test_bad_arguments_fail_before_any_work_naming_the_flag(tmp_path, capsys):
    out = tmp_path / "out"
    for args, message in ((["--attacks", "fgsn"], "argument --attacks: unknown 'fgsn'"),
                          (["--attack-limit", "0"], "argument --attack-limit: must be >= 1"),
                          (["--corruptions", "fogg"], "--corruptions: unknown 'fogg'"),
                          (["--val", str(tmp_path / "nope")], "--val .*nope: folder not found"),
                          (["--weights", str(tmp_path / "w.pt")], "--weights .*w.pt: file not found")):
        assert exit_code(["--model", "timm:test_resnet.r160_in1k", "--out", str(out), *args]) == 2
        assert re.search(message, capsys.readouterr().err), message
    assert not out.exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    val = tree(tmp_path / "val", {SYNSETS[i]: i for i in PICKED[:2]})
    out = tmp_path / "out"
    code = nst_eval(["--model", "timm:test_resnet.r160_in1k", "--val", str(val), "--out", str(out), "--dry-run",
                     "--cache-dir", str(tmp_path / "cache")])
    text = capsys.readouterr().out
    assert code == 0 and not out.exists() and not (tmp_path / "cache").exists()
    assert "timm:test_resnet.r160_in1k@random-init: 160x160, crop_pct 0.95, center, bilinear" in text
    assert "corruption          imagenet-c/torch" in text and "estimate:" in text and "dry run" in text


def test_pretrained_offline_fails_fast_naming_the_model_and_weights_flag(monkeypatch, tmp_path):
    import socket

    from nst_core import load_model
    from nst_common.errors import CheckpointError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    asked = []

    def offline(address, timeout=None, *args, **kwargs):
        asked.append(timeout)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(CheckpointError, match=r"timm:test_resnet.r160_in1k: --pretrained .* --weights FILE"):
        load_model("timm:test_resnet.r160_in1k", pretrained=True)
    assert asked and all(t is not None and t <= 5 for t in asked)


def test_nst_train_refuses_mismatched_class_folders_before_writing(tmp_path, capsys):
    from nst_core.cli import main as nst_train

    train = tree(tmp_path / "train", {"cat": 1, "dog": 2, "eel": 3}, per_class=3)
    test = tree(tmp_path / "test", {"dog": 2, "eel": 3})
    config = tmp_path / "c.yaml"
    config.write_text(f"name: folders\nmodels: [{{arch: test_efficientnet}}]\ngenerations: 1\n"
                      f"data: {{dataset: imagefolder, data_dir: {train}, test_dir: {test}, labeled_per_class: 1, "
                      "input_size: [3, 16, 16]}\n")
    out = tmp_path / "run"
    assert nst_train(["--config", str(config), "--out", str(out), "--quiet"]) == 2
    assert "does not have the classes of data.data_dir: missing ['cat']" in capsys.readouterr().err
    assert not out.exists()  # nothing written: the corrected rerun starts clean


def test_weights_files_of_every_common_kind_load_and_bad_ones_are_named(tmp_path):
    from nst_core import load_model
    from nst_common.errors import CheckpointError

    model, meta = load_model("timm:test_resnet.r160_in1k")
    state = {k: v.clone() for k, v in model.model.state_dict().items()}
    nested = tmp_path / "train_ckpt.pth"  # a training checkpoint: {'state_dict': {'module.<key>': ...}, 'epoch': ...}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, nested)
    plain = tmp_path / "plain.bin"
    torch.save(state, plain)
    for path in (nested, plain):
        loaded, loaded_meta = load_model("timm:test_resnet.r160_in1k", weights=path)
        assert loaded_meta["sha256"] == meta["sha256"], path.name  # the same tensors, whatever the container
    with pytest.raises(CheckpointError, match=r"plain\.bin does not fit the model: missing"):
        load_model("timm:test_efficientnet.r160_in1k", weights=plain)

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    hostile = tmp_path / "hostile.pth"
    torch.save({"state_dict": Payload()}, hostile)
    with pytest.raises(CheckpointError, match=r"hostile\.pth is not a readable weights file") as refused:
        load_model("timm:test_resnet.r160_in1k", weights=hostile)
    assert "never does" in str(refused.value) and "weights_only=False" not in str(refused.value)  # no unsafe advice
    text = tmp_path / "README.md"
    text.write_text("# not weights\n")
    with pytest.raises(CheckpointError, match=r"README\.md is not a readable weights file") as refused:
        load_model("timm:test_resnet.r160_in1k", weights=text)
    assert "weights_only=False" not in str(refused.value)


def test_each_file_is_decoded_once_per_model_for_all_its_cells(tmp_path, monkeypatch):
    val = tree(tmp_path / "val", {SYNSETS[i]: i for i in PICKED[:3]}, per_class=3)
    reads = []
    original = EvalTransform.__call__
    monkeypatch.setattr(EvalTransform, "__call__", lambda self, path: reads.append(path) or original(self, path))
    torch.manual_seed(0)
    linear = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 1000)).eval()  # attacks need gradients
    rows = eval.evaluate(linear, META, "clean,adversarial", data=eval.DataSources(val=val), eps=[0, 2],
                         progress=False)
    assert len([r for r in rows if r["metric"] == "top1"]) == 1 + 4  # clean + 2 attacks x 2 eps
    assert sorted(map(str, reads)) == sorted(str(p) for p in val.rglob("*.png"))  # 9 files, each read once
    reads.clear()
    eval.evaluate(PixelClass().eval(), META, "clean", data=eval.DataSources(val=val), progress=False,
                  decode_budget=0)  # over the budget: streamed, nothing kept
    assert len(reads) == 9
