"""Data: the IDX reader, the documented input transform, the seeded labeled split, ImageFolder trees."""
import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from nst_core.config import DataConfig
from nst_core.data import DataError, load_test_set, read_idx, split_labeled, to_model_input


def test_idx_reader(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(tmp_path / "x-idx3-ubyte.gz", "wb") as f:
        f.write(header + arr.tobytes())
    assert np.array_equal(read_idx(tmp_path, "x-idx3-ubyte"), arr)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"\x00" * 4)
    with pytest.raises(DataError, match="not an unsigned-byte IDX"):
        read_idx(tmp_path, "bad")


def test_model_input_transform():
    grey = torch.full((2, 28, 28), 200, dtype=torch.uint8)
    out = to_model_input(grey, [3, 32, 32])
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.uint8
    assert int(out.min()) == 200 and int(out.max()) == 200  # constant images stay constant
    same = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(to_model_input(same, [3, 8, 8]), same)


def test_split_is_seeded_and_exact():
    labels = torch.arange(100) % 4
    lab, unl = split_labeled(labels, 5, seed=0)
    assert len(lab) == 20 and len(unl) == 80 and not set(lab.tolist()) & set(unl.tolist())
    assert torch.bincount(labels[lab]).tolist() == [5, 5, 5, 5]
    assert torch.equal(lab, split_labeled(labels, 5, seed=0)[0])
    assert not torch.equal(lab, split_labeled(labels, 5, seed=1)[0])


def test_fashion_mnist_test_set():
    test = load_test_set(DataConfig(), [3, 32, 32])
    assert len(test) == 10_000 and test.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_imagefolder_tree_and_unreadable_file(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / "val" / c).mkdir(parents=True)
        Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "val" / c / "a.png")
    cfg = DataConfig(dataset="imagefolder", test_dir=str(tmp_path / "val"), input_size=[3, 16, 16])
    test = load_test_set(cfg)
    image, label = test[1]
    assert test.classes == ["cat", "dog"] and label == 1 and image.shape == (3, 16, 16)
    assert image[:, 8, 8].tolist() == [10, 20, 30]
    (tmp_path / "val" / "dog" / "b.jpg").write_bytes(b"not a jpeg")
    broken = load_test_set(cfg)
    with pytest.raises(DataError, match=r"cannot read image .*b\.jpg"):
        broken[2]
    with pytest.raises(DataError, match="test_dir"):
        load_test_set(DataConfig(dataset="imagefolder", test_dir=str(tmp_path / "missing")))
