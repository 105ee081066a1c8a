"""The one image-set type (`nst_core.imagesets.ImageSet`): training's Dataset and the evaluator's set agree."""
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from nst_common.errors import DataError
from nst_core.images import EvalTransform
from nst_core.imagesets import ImageSet


def _toy() -> ImageSet:
    images = (torch.arange(4 * 3 * 4 * 4) % 251).to(torch.uint8).reshape(4, 3, 4, 4)
    return ImageSet(torch.tensor([0, 1, 2, 1]), 3, "toy", images=images)


def test_identity_is_pinned():
    """`identity` is the data_id results stores key cells on: these strings (computed by the evaluator's set type
    before the two image-set types became one) must never change."""
    toy = _toy()
    assert toy.identity == "41e418697e322997" and toy.source_id == "e9d6f3c593770736"
    part = toy.subset([3, 1])
    assert part.indices.tolist() == [3, 1] and part.labels.tolist() == [1, 1]
    assert part.identity == "e5ce1a22c6667736"


def test_dataset_protocol_and_batches_agree(tmp_path):
    for c, colour in (("0", (10, 20, 30)), ("1", (200, 100, 50))):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (20, 12), colour).save(tmp_path / c / f"{i}.png")
    files = sorted(tmp_path.rglob("*.png"))
    data = ImageSet(torch.tensor([0, 0, 0, 1, 1, 1]), 2, "tree", files=files, transform=EvalTransform((3, 8, 8)))
    image, label = data[4]
    assert isinstance(label, int) and label == 1 and image.dtype == torch.uint8
    assert image[:, 4, 4].tolist() == [200, 100, 50]
    x, y = next(data.batches(6, workers=0))
    loaded = next(iter(DataLoader(data, batch_size=6)))
    assert torch.equal(x, loaded[0]) and y.tolist() == loaded[1].tolist() == [0, 0, 0, 1, 1, 1]
    assert data.decoded_bytes == 6 * 3 * 8 * 8 and data.classes == ["0", "1"]
    memory = data.subset(torch.tensor([5, 0])).materialize(workers=0)
    assert memory.files is None and torch.equal(memory.pixels, x[[5, 0]]) and memory.indices.tolist() == [5, 0]


def test_bad_sets_are_refused(tmp_path):
    with pytest.raises(ValueError, match="either images or files"):
        ImageSet(torch.zeros(1), 1, "none")
    with pytest.raises(ValueError, match="transform"):
        ImageSet(torch.zeros(1), 1, "files", files=[tmp_path / "a.png"])
    (tmp_path / "a.png").write_bytes(b"not a png")
    broken = ImageSet(torch.zeros(1), 1, "broken", files=[tmp_path / "a.png"], transform=EvalTransform((3, 8, 8)))
    with pytest.raises(DataError, match=r"a\.png") as caught:
        broken[0]
    assert isinstance(caught.value, DataError)  # training catches DataError, evaluation DataError
    with pytest.raises(ValueError, match="materialize"):
        broken.pixels
