"""Tests of the real-dataset loaders (dfml_plugins.datasets.real.dataset) on tiny fake copies of each layout.

Nothing is downloaded: every test builds the directory layout it reads in tmp_path.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfml_bench.data import SPLITS, FewShotDataset
from dfml_bench.errors import ConfigError, DataError
from dfml_plugins.datasets.real import dataset as real
from dfml_plugins.datasets.real import CifarFSParams, CUBParams, MiniImageNetParams
from dfml_plugins.datasets.real.cifar_fs_split import CIFAR_FS_SPLIT

# CIFAR-100's 100 fine label names (the archive's meta order), an independent reference for the split.
CIFAR100_FINE = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]


# ------------------------------------------------------------------ fakes ---


def make_cifar(root: Path, names: list[str] | None = None, train_per_class: int = 2,
               test_per_class: int = 1) -> Path:
    """cifar-100-python/{train,test,meta}; image pixels encode (R: meta label, G: instance #, B: 255)."""
    names = list(CIFAR100_FINE if names is None else names)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    with open(base / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": names, "coarse_label_names": ["x"] * 20}, fh)
    offset = 0
    for part, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = [c for k in range(per_class) for c in range(len(names))]  # interleaved like the real archive
        data = np.zeros((len(labels), 3, 32, 32), dtype=np.uint8)
        for i, c in enumerate(labels):
            data[i, 0], data[i, 1], data[i, 2] = c, offset + i // len(names), 255
        with open(base / part, "wb") as fh:
            pickle.dump({"data": data.reshape(len(labels), 3072), "fine_labels": labels,
                         "coarse_labels": [0] * len(labels), "filenames": [f"{i}.png" for i in range(len(labels))]},
                        fh)
        offset += per_class
    return base


def wnid(i: int) -> str:
    return f"n{1000000 + i:08d}"


def make_mini(root: Path, per_class: int = 2) -> Path:
    """mini-imagenet/{train,val,test}.csv + images/*.png; 64/16/20 wnids; csv rows in reverse order."""
    base = root / "mini-imagenet"
    (base / "images").mkdir(parents=True)
    counts = {"train": 64, "val": 16, "test": 20}
    c = 0
    for split in SPLITS:
        rows = []
        for _ in range(counts[split]):
            for k in range(per_class):
                fname = f"{wnid(c)}{k:08d}.png"
                if c == 0 and k == 0:  # one grayscale image
                    Image.new("L", (12, 7), 77).save(base / "images" / fname)
                else:
                    Image.new("RGB", (12, 7), (c, 100 + k, 200)).save(base / "images" / fname)
                rows.append(f"{fname},{wnid(c)}")
            c += 1
        (base / f"{split}.csv").write_text("filename,label\n" + "\n".join(reversed(rows)) + "\n")
    return base


def cub_folder(i: int) -> str:
    return f"{i + 1:03d}.Bird_{i + 1}"


def make_cub(root: Path, num_classes: int = 200, per_class: int = 2) -> Path:
    """CUB_200_2011/images/<NNN.Bird_N>/*.jpg, tiny JPEGs whose red channel encodes the class."""
    images = root / "CUB_200_2011" / "images"
    for i in range(num_classes):
        folder = images / cub_folder(i)
        folder.mkdir(parents=True)
        for k in range(per_class):
            path = folder / f"Bird_{i + 1}_{k:04d}.jpg"
            if i == 0 and k == 0:
                Image.new("L", (10, 14), 90).save(path, quality=95)
            else:
                Image.new("RGB", (10, 14), (i, 40 * (k + 1), 128)).save(path, quality=95)
    return root / "CUB_200_2011"


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    make_cifar(root)
    return root


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mini")
    make_mini(root)
    return root


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cub(tmp_path_factory.mktemp("cub"))  # the CUB_200_2011 directory


def check_dataset(ds: FewShotDataset, name: str, size: int, classes: tuple[int, int, int]) -> None:
    assert isinstance(ds, FewShotDataset) and ds.name == name and ds.image_size == size
    for split, n in zip(SPLITS, classes):
        sp = ds.split(split)
        assert sp.num_classes == n and len(set(sp.class_names)) == n
        assert sp.images.dtype == torch.uint8 and sp.images.is_contiguous()
        assert sp.images.shape[1:] == (3, size, size)
        assert sp.labels.dtype == torch.int64 and sp.labels.shape == (sp.images.shape[0],)
        assert sorted(set(sp.labels.tolist())) == list(range(n))
        assert sp.class_names == sorted(sp.class_names)
    names = [set(ds.split(s).class_names) for s in SPLITS]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


# ------------------------------------------------------------- the split ---


def test_cifar_fs_split_is_standard() -> None:
    train, val, test = (set(CIFAR_FS_SPLIT[s]) for s in SPLITS)
    assert (len(train), len(val), len(test)) == (64, 16, 20)
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(CIFAR100_FINE) and len(CIFAR100_FINE) == 100
    assert {"otter", "motorcycle", "television", "sea", "cattle"} <= val
    assert {"baby", "bed", "pickup_truck", "sweet_pepper", "worm"} <= test
    assert {"train", "skyscraper", "cloud", "apple"} <= train


# --------------------------------------------------------------- cifar_fs ---


def test_cifar_fs_loads_pooled_train_and_test(cifar_root: Path, tmp_path: Path) -> None:
    ds = real.build_cifar_fs(CifarFSParams(), cifar_root, tmp_path)
    check_dataset(ds, "cifar_fs", 32, (64, 16, 20))
    assert ds.mean == (0.5071, 0.4867, 0.4408) and ds.std == (0.2675, 0.2565, 0.2761)
    for split in SPLITS:
        sp = ds.split(split)
        assert sp.class_names == sorted(CIFAR_FS_SPLIT[split])
        assert len(sp.labels) == 3 * sp.num_classes  # 2 train + 1 test image per class
        for c, cls in enumerate(sp.class_names):
            imgs = sp.images[sp.labels == c]
            assert (imgs[:, 0] == CIFAR100_FINE.index(cls)).all()  # the right class, CHW order
            assert imgs[:, 1, 0, 0].tolist() == [0, 1, 2]  # train images first, then test
            assert (imgs[:, 2] == 255).all()


def test_cifar_fs_uses_label_names_not_indices(tmp_path: Path) -> None:
    shuffled = list(reversed(CIFAR100_FINE))
    make_cifar(tmp_path / "data", names=shuffled, train_per_class=1, test_per_class=1)
    ds = real.build_cifar_fs(CifarFSParams(), tmp_path / "data" / "cifar-100-python", tmp_path / "cache")
    sp = ds.split("val")
    otter = sp.images[sp.labels == sp.class_names.index("otter")]
    assert (otter[:, 0] == shuffled.index("otter")).all()


def test_cifar_fs_resize_and_max_per_class(cifar_root: Path, tmp_path: Path) -> None:
    ds = real.build_cifar_fs(CifarFSParams(image_size=16, max_per_class=2), cifar_root, tmp_path)
    check_dataset(ds, "cifar_fs", 16, (64, 16, 20))
    sp = ds.split("test")
    assert len(sp.labels) == 2 * 20
    baby = sp.images[sp.labels == sp.class_names.index("baby")]
    assert (baby[:, 0] == CIFAR100_FINE.index("baby")).all() and baby[:, 1, 0, 0].tolist() == [0, 1]


def test_cifar_fs_cache_is_reused(cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = real.build_cifar_fs(CifarFSParams(), cifar_root, tmp_path)
    files = list((tmp_path / "real").glob("cifar_fs-*.pt"))
    assert len(files) == 1 and not list((tmp_path / "real").glob("*.tmp"))

    def boom(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(real, "_load_cifar_batches", boom)
    second = real.build_cifar_fs(CifarFSParams(), cifar_root, tmp_path)
    for split in SPLITS:
        assert torch.equal(first.split(split).images, second.split(split).images)
        assert torch.equal(first.split(split).labels, second.split(split).labels)
        assert first.split(split).class_names == second.split(split).class_names
    with pytest.raises(AssertionError, match="cache"):  # other params: another cache entry
        real.build_cifar_fs(CifarFSParams(max_per_class=1), cifar_root, tmp_path)


def test_cifar_fs_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-root DIR holding cifar-100-python"):
        real.build_cifar_fs(CifarFSParams(), None, tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        real.build_cifar_fs(CifarFSParams(), tmp_path / "nowhere", tmp_path)
    with pytest.raises(DataError, match="no cifar-100-python/ directory"):
        real.build_cifar_fs(CifarFSParams(), tmp_path, tmp_path)
    base = make_cifar(tmp_path / "d", train_per_class=1)
    (base / "meta").unlink()
    with pytest.raises(DataError, match="lacks meta"):
        real.build_cifar_fs(CifarFSParams(), tmp_path / "d", tmp_path)
    wrong = list(CIFAR100_FINE)
    wrong[wrong.index("otter")] = "sea_otter"
    make_cifar(tmp_path / "e", names=wrong, train_per_class=1)
    with pytest.raises(DataError, match=r"do not match the CIFAR-FS split \(missing otter; unexpected sea_otter"):
        real.build_cifar_fs(CifarFSParams(), tmp_path / "e", tmp_path)
    make_cifar(tmp_path / "f", train_per_class=1, test_per_class=0)
    with pytest.raises(DataError, match="fewer than 2"):
        real.build_cifar_fs(CifarFSParams(), tmp_path / "f", tmp_path)
    (tmp_path / "g" / "cifar-100-python").mkdir(parents=True)
    for f in ("train", "test", "meta"):
        (tmp_path / "g" / "cifar-100-python" / f).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read .*meta as a CIFAR-100 pickle"):
        real.build_cifar_fs(CifarFSParams(), tmp_path / "g", tmp_path)
    with pytest.raises(ConfigError, match="max_per_class"):
        real.build_cifar_fs(CifarFSParams(max_per_class=0), tmp_path / "e", tmp_path)


# ---------------------------------------------------------- mini_imagenet ---


def test_mini_imagenet_loads(mini_root: Path, tmp_path: Path) -> None:
    ds = real.build_mini_imagenet(MiniImageNetParams(image_size=8), mini_root, tmp_path)
    check_dataset(ds, "mini_imagenet", 8, (64, 16, 20))
    assert ds.mean == (0.485, 0.456, 0.406) and ds.std == (0.229, 0.224, 0.225)
    train, val = ds.split("train"), ds.split("val")
    assert train.class_names == [wnid(c) for c in range(64)]
    assert val.class_names == [wnid(c) for c in range(64, 80)]
    assert ds.split("test").class_names == [wnid(c) for c in range(80, 100)]
    assert len(train.labels) == 2 * 64
    gray = train.images[0]  # wnid 0, first file (sorted) was saved as grayscale
    assert (gray == 77).all()
    for c in (1, 40):
        imgs = train.images[train.labels == c]
        assert (imgs[:, 0] == c).all() and imgs[:, 1, 0, 0].tolist() == [100, 101]  # sorted file order
    vimgs = val.images[val.labels == 3]
    assert (vimgs[:, 0] == 67).all() and (vimgs[:, 2] == 200).all()


def test_mini_imagenet_accepts_dataset_dir_and_max_per_class(mini_root: Path, tmp_path: Path) -> None:
    ds = real.build_mini_imagenet(MiniImageNetParams(image_size=6, max_per_class=1), mini_root / "mini-imagenet",
                                  tmp_path)
    check_dataset(ds, "mini_imagenet", 6, (64, 16, 20))
    train = ds.split("train")
    assert len(train.labels) == 64 and train.images[1:, 1, 0, 0].eq(100).all()


def test_mini_imagenet_cache_is_reused(mini_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = MiniImageNetParams(image_size=8)
    first = real.build_mini_imagenet(params, mini_root, tmp_path)

    def boom(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as m:
        m.setattr(real, "_decode_files", boom)
        second = real.build_mini_imagenet(params, mini_root, tmp_path)
    assert all(torch.equal(first.split(s).images, second.split(s).images) for s in SPLITS)
    # a corrupt cache file is rebuilt
    (cache,) = (tmp_path / "real").glob("mini_imagenet-*.pt")
    cache.write_bytes(b"garbage")
    third = real.build_mini_imagenet(params, mini_root, tmp_path)
    assert all(torch.equal(first.split(s).images, third.split(s).images) for s in SPLITS)
    assert torch.load(cache, weights_only=True)["version"] == real.CACHE_VERSION


def test_mini_imagenet_errors(tmp_path: Path) -> None:
    p = MiniImageNetParams(image_size=8)
    with pytest.raises(DataError, match="--data-root DIR holding mini-imagenet/"):
        real.build_mini_imagenet(p, None, tmp_path)
    with pytest.raises(DataError, match="no mini-imagenet/ directory"):
        real.build_mini_imagenet(p, tmp_path, tmp_path)
    base = make_mini(tmp_path / "d")
    csvs = {s: (base / f"{s}.csv").read_text() for s in SPLITS}

    (base / "val.csv").unlink()
    with pytest.raises(DataError, match="lacks val.csv"):
        real.build_mini_imagenet(p, tmp_path / "d", tmp_path)
    (base / "val.csv").write_text(csvs["val"])

    missing = f"{wnid(70)}00000001.png"
    (base / "images" / missing).rename(tmp_path / "moved.png")
    with pytest.raises(DataError, match=f"names '{missing}', which is missing"):
        real.build_mini_imagenet(p, tmp_path / "d", tmp_path)
    (tmp_path / "moved.png").rename(base / "images" / missing)

    lines = csvs["val"].splitlines()
    (base / "val.csv").write_text("\n".join(line for line in lines if wnid(64) not in line) + "\n")
    with pytest.raises(DataError, match="lists 15 classes but the Ravi & Larochelle val split has 16"):
        real.build_mini_imagenet(p, tmp_path / "d", tmp_path)
    (base / "val.csv").write_text("\n".join(line for line in lines if f"{wnid(64)}00000001" not in line) + "\n")
    with pytest.raises(DataError, match=f"class {wnid(64)} has 1 image"):
        real.build_mini_imagenet(p, tmp_path / "d", tmp_path)
    (base / "val.csv").write_text("name,wnid\n" + "\n".join(lines[1:]))
    with pytest.raises(DataError, match="header 'filename,label'"):
        real.build_mini_imagenet(p, tmp_path / "d", tmp_path)
    (base / "val.csv").write_text(csvs["val"])

    bad = base / "images" / f"{wnid(5)}00000000.png"
    bad.write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError, match=f"cannot read the image .*{bad.name}"):
        real.build_mini_imagenet(p, tmp_path / "d", tmp_path)

    shutil.rmtree(base / "images")
    with pytest.raises(DataError, match="images is missing"):
        real.build_mini_imagenet(p, tmp_path / "d", tmp_path)


# -------------------------------------------------------------------- cub ---


def test_cub_loads_with_the_index_rule(cub_root: Path, tmp_path: Path) -> None:
    ds = real.build_cub(CUBParams(image_size=8), cub_root.parent, tmp_path)
    check_dataset(ds, "cub", 8, (100, 50, 50))
    assert ds.mean == (0.485, 0.456, 0.406) and ds.std == (0.229, 0.224, 0.225)
    train, val, test = (ds.split(s) for s in SPLITS)
    assert train.class_names[:2] == [cub_folder(0), cub_folder(2)]  # i % 2 == 0
    assert val.class_names[:2] == [cub_folder(1), cub_folder(5)]  # i % 4 == 1
    assert test.class_names[:2] == [cub_folder(3), cub_folder(7)]  # i % 4 == 3
    assert "002.Bird_2" in val.class_names and "004.Bird_4" in test.class_names and "200.Bird_200" in test.class_names
    assert [real.cub_split_of(i) for i in range(8)] == ["train", "val", "train", "test"] * 2
    assert len(train.labels) == 200 and len(val.labels) == 100 and len(test.labels) == 100
    gray = train.images[0]  # 001, first file: a grayscale JPEG, now 3 equal channels
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert (gray.int() - 90).abs().max() <= 3
    imgs = test.images[test.labels == test.class_names.index("004.Bird_4")].int()
    assert (imgs[:, 0] - 3).abs().max() <= 6 and (imgs[:, 1, 4, 4] - torch.tensor([40, 80])).abs().max() <= 6


def test_cub_cache_threads_and_max_per_class(cub_root: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    p = CUBParams(image_size=8)
    monkeypatch.setenv(real.DECODE_WORKERS_ENV, "1")
    first = real.build_cub(p, cub_root, tmp_path / "a")
    monkeypatch.setenv(real.DECODE_WORKERS_ENV, "2")  # threads give the very same tensors
    threaded = real.build_cub(p, cub_root, tmp_path / "b")
    assert all(torch.equal(first.split(s).images, threaded.split(s).images) for s in SPLITS)

    def boom(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(real, "_decode_files", boom)
    cached = real.build_cub(p, cub_root, tmp_path / "a")
    assert all(torch.equal(first.split(s).images, cached.split(s).images) for s in SPLITS)
    with pytest.raises(AssertionError, match="cache"):  # different params: not that cache entry
        real.build_cub(CUBParams(image_size=8, max_per_class=1), cub_root, tmp_path / "a")
    monkeypatch.undo()
    one = real.build_cub(CUBParams(image_size=8, max_per_class=1), cub_root, tmp_path / "a")
    check_dataset(one, "cub", 8, (100, 50, 50))
    assert len(one.split("val").labels) == 50
    assert torch.equal(one.split("val").images, first.split("val").images[::2])  # first file of each class


def test_cub_source_change_invalidates_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_cub(tmp_path / "data", per_class=2)
    p = CUBParams(image_size=8)
    real.build_cub(p, root, tmp_path / "cache")
    Image.new("RGB", (10, 14), (250, 0, 0)).save(root / "images" / cub_folder(1) / "Bird_2_0000.jpg")
    st = os.stat(root / "images" / cub_folder(1) / "Bird_2_0000.jpg")
    os.utime(root / "images" / cub_folder(1) / "Bird_2_0000.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ds = real.build_cub(p, root, tmp_path / "cache")
    assert int(ds.split("val").images[0, 0].float().mean()) > 200
    assert len(list((tmp_path / "cache" / "real").glob("cub-*.pt"))) == 2


def test_cub_errors(tmp_path: Path) -> None:
    p = CUBParams(image_size=8)
    with pytest.raises(DataError, match="--data-root DIR holding CUB_200_2011/images/"):
        real.build_cub(p, None, tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        real.build_cub(p, tmp_path / "nowhere", tmp_path)
    with pytest.raises(DataError, match="CUB_200_2011/images is not a directory"):
        real.build_cub(p, tmp_path, tmp_path)
    root = make_cub(tmp_path / "d", num_classes=199, per_class=2)
    with pytest.raises(DataError, match="holds 199 class folders but CUB-200-2011 has 200"):
        real.build_cub(p, root, tmp_path)
    folder = root / "images" / cub_folder(199)
    folder.mkdir()
    (folder / ".hidden.jpg").write_bytes(b"")  # hidden files and non-images are not images
    (folder / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"200\.Bird_200 holds 0 image\(s\), fewer than 2"):
        real.build_cub(p, root, tmp_path)
    for name in ("a.jpg", "b.JPG"):
        Image.new("RGB", (4, 4)).save(folder / name, format="JPEG")
    broken = root / "images" / cub_folder(42) / "Bird_43_0001.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=f"cannot read the image .*{cub_folder(42)}/Bird_43_0001.jpg"):
        real.build_cub(p, root, tmp_path)
    broken.unlink()
    with pytest.raises(DataError, match=r"043\.Bird_43 holds 1 image\(s\)"):
        real.build_cub(p, root, tmp_path)
    with pytest.raises(ConfigError, match="image_size"):
        real.build_cub(CUBParams(image_size=0), root, tmp_path)
