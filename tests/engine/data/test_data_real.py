"""CIFAR-100 (binary release) and ImageNet (class-folder layout) loaders, on small files written
here in the real formats and layouts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine import data as edata
from engine.data import imagenet, vision
from engine.errors import DatasetUnavailableError, InvalidParameterError


# ---------------------------------------------------------------------------------------------
# CIFAR-100


def write_cifar100(root, split, coarse, fine, seed=0):
    """A CIFAR-100 binary file: per record coarse byte, fine byte, 1024 R, 1024 G, 1024 B bytes."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(len(fine), 3 * 32 * 32), dtype=np.uint8)
    records = np.concatenate([np.array(coarse, np.uint8)[:, None], np.array(fine, np.uint8)[:, None], pixels], axis=1)
    folder = root / "cifar-100-binary"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.bin").write_bytes(records.tobytes())
    return pixels


def test_cifar100_reads_the_binary_format(tmp_path):
    pixels = write_cifar100(tmp_path, "test", coarse=[4, 1, 19], fine=[0, 1, 99])
    write_cifar100(tmp_path, "train", coarse=[0], fine=[4])
    assert edata.dataset_available("cifar100", tmp_path)
    ds = edata.load_dataset("cifar100", split="test", root=tmp_path, download=False)
    assert len(ds) == 3 and ds.spec.num_classes == 100
    image, label = ds[2]
    assert image.shape == (3, 32, 32) and label == 99
    # channel-planar bytes: the first 1024 are red, row-major
    assert torch.allclose(image[0].flatten(), torch.from_numpy(pixels[2, :1024]).float() / 255)
    assert torch.allclose(image[2, 31, 31], torch.tensor(pixels[2, -1] / 255, dtype=torch.float32))
    assert ds.fine_labels.tolist() == [0, 1, 99] and ds.coarse_labels.tolist() == [4, 1, 19]
    assert ds.class_names[0] == "apple" and ds.class_names[99] == "worm" and ds.coarse_names[4] == "fruit_and_vegetables"
    coarse = edata.load_dataset("cifar100", split="test", root=tmp_path, download=False, label_type="coarse")
    assert coarse.spec.num_classes == 20 and [coarse[i][1] for i in range(3)] == [4, 1, 19]
    images, labels = edata.take(ds, 2)
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [0, 1]


def test_cifar100_names_come_from_the_release_files(tmp_path):
    write_cifar100(tmp_path, "test", coarse=[0], fine=[0])
    folder = tmp_path / "cifar-100-binary"
    (folder / "fine_label_names.txt").write_text("\n".join(f"fine{i}" for i in range(100)) + "\n")
    (folder / "coarse_label_names.txt").write_text("\n".join(f"coarse{i}" for i in range(20)))
    ds = vision.load_cifar100("test", tmp_path, download=False)
    assert ds.class_names[5] == "fine5" and ds.coarse_names[19] == "coarse19"


def test_cifar100_corrupt_or_missing_files_are_clear(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="cifar-100-binary/test.bin"):
        vision.load_cifar100("test", tmp_path, download=False)
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    (folder / "test.bin").write_bytes(bytes(3073))  # a CIFAR-10 record, one byte short
    with pytest.raises(DatasetUnavailableError, match="multiple of 3074"):
        vision.load_cifar100("test", tmp_path, download=False)
    write_cifar100(tmp_path, "test", coarse=[0], fine=[100])
    with pytest.raises(DatasetUnavailableError, match="out of range"):
        vision.load_cifar100("test", tmp_path, download=False)
    with pytest.raises(InvalidParameterError, match="label_type"):
        edata.load_dataset("cifar100", root=tmp_path, label_type="medium")


# ---------------------------------------------------------------------------------------------
# ImageNet


def write_image(path, size=(300, 200), colour=(200, 30, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)


def test_imagenet_class_table():
    wnids, names = imagenet.class_table()
    assert len(wnids) == 1000 == len(set(wnids)) and list(wnids) == sorted(wnids)
    assert (wnids[0], names[0]) == ("n01440764", "tench") and wnids[999] == "n15075141"
    assert len(set(names)) == 1000  # the two "crane"s and "maillot"s are told apart
    spec = edata.get_spec("imagenet")
    assert spec.num_classes == 1000 and spec.input_shape == (3, 224, 224) and spec.class_names == names


def test_imagenet_folder_layout_keeps_the_standard_labels(tmp_path):
    val = tmp_path / "imagenet" / "val"
    write_image(val / "n01443537" / "ILSVRC2012_val_00000001.JPEG", fmt="JPEG")
    write_image(val / "n15075141" / "ILSVRC2012_val_00000002.png", size=(180, 400), colour=(10, 200, 10))
    assert edata.dataset_available("imagenet", tmp_path)
    ds = edata.load_dataset("imagenet", root=tmp_path)
    assert len(ds) == 2 and sorted(label for _, label in ds.samples) == [1, 999]
    image, label = ds[0]
    assert image.shape == (3, 224, 224) and label == 1 and float(image.min()) >= 0 and float(image.max()) <= 1
    assert ds.class_names[999] == "toilet tissue"
    assert edata.load_dataset("imagenet", root=tmp_path, image_size=288, resize=None)[1][0].shape == (3, 288, 288)
    square = edata.load_dataset("imagenet", root=tmp_path, resize="square", interpolation="bicubic")
    assert square[1][0].shape == (3, 224, 224)
    with pytest.raises(InvalidParameterError, match="interpolation"):
        edata.load_dataset("imagenet", root=tmp_path, interpolation="nearest-ish")


def test_imagenet_is_never_downloaded_and_says_where_files_go(tmp_path):
    assert not edata.dataset_available("imagenet", tmp_path)
    with pytest.raises(DatasetUnavailableError) as err:
        edata.load_dataset("imagenet", root=tmp_path, download=True)
    message = str(err.value)
    assert str(tmp_path / "imagenet" / "val") in message and "<wnid>" in message and "cannot be downloaded" in message
    write_image(tmp_path / "imagenet" / "val" / "cats" / "a.jpg")
    assert not edata.dataset_available("imagenet", tmp_path)
    with pytest.raises(DatasetUnavailableError, match="not ImageNet WordNet ids"):
        edata.load_dataset("imagenet", root=tmp_path)


def test_imagenet_preprocessing_follows_the_card():
    card = {"input_shape": [3, 288, 288], "source": {"robustbench": {"preprocessing": {
        "name": "Crop288", "resize": None, "crop": 288, "interpolation": "bilinear"}}}}
    assert imagenet.loader_options(card) == {"image_size": 288, "resize": None, "interpolation": "bilinear"}
    card["source"]["robustbench"]["preprocessing"] = {"name": "BicubicRes256Crop224", "resize": 256, "crop": 224,
                                                      "interpolation": "bicubic"}
    assert imagenet.loader_options(card) == {"image_size": 224, "resize": 256, "interpolation": "bicubic"}
    card["source"]["robustbench"]["preprocessing"] = {"name": "Res224", "resize": [224, 224], "crop": None,
                                                      "interpolation": "bilinear"}
    assert imagenet.loader_options(card)["resize"] == "square"
    assert imagenet.loader_options({"input_shape": [3, 160, 160]}) == {"image_size": 160}
    assert imagenet.loader_options({"input_shape": [3, 224, 224]}) == {}


def test_registry_lists_the_new_datasets():
    assert {"cifar100", "imagenet"} <= set(edata.DATASETS)
    assert edata.get_spec("cifar100").class_names[:2] == ("apple", "aquarium_fish")


def test_a_model_for_missing_data_still_opens(tmp_path):
    """A checkpoint whose card names ImageNet loads (card, layers) without the images; data
    access then fails with the layout message, not a traceback."""
    from engine import load
    from engine.checkpoints import make_card, save_checkpoint
    from engine.models import build_model, list_layers

    model = build_model("small_cnn", 1000, (3, 224, 224), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], width=4, hidden=8)
    path = save_checkpoint(model, make_card(model, "imagenet"), tmp_path / "ck" / "tiny_imagenet")
    loaded = load(path)
    assert loaded.card.to_dict()["dataset"] == "imagenet" and loaded.card.to_dict()["class_names"][0] == "tench"
    assert list_layers(loaded.model)
    with pytest.raises(DatasetUnavailableError, match="imagenet/val"):
        edata.load_dataset(loaded.card.to_dict()["dataset"], root=tmp_path / "no-data")
