"""The standard CIFAR-FS class split (Bertinetto et al. 2019, "Meta-learning with differentiable
closed-form solvers", the R2D2 repository's ``data/cifar-fs/splits/bertinetto/{train,val,test}.txt``).

64 meta-train, 16 meta-val and 20 meta-test classes named by their CIFAR-100 fine label
names. The lists are stored sorted (the loader orders classes alphabetically within a
split); as sets they were checked against two independent public copies of the split:
torchmeta's ``torchmeta/datasets/assets/cifar100/cifar-fs/{train,val,test}.json``
(tristandeleu/pytorch-meta) and the inline lists of Arnout Devos' CIFAR-FS preparation
script (a derivative of ArnoutDevos/maml-cifar-fs ``data/CIFARFS/get_cifarfs.py``).
Together they are disjoint and cover exactly CIFAR-100's 100 fine label names.
"""

from __future__ import annotations

CIFAR_FS_TRAIN: tuple[str, ...] = (
    "apple", "aquarium_fish", "bear", "bee", "bottle", "bowl", "boy", "bridge", "bus", "can",
    "castle", "caterpillar", "chair", "clock", "cloud", "cockroach", "couch", "cup", "dinosaur",
    "dolphin", "elephant", "forest", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lawn_mower", "lion", "lizard", "lobster", "mountain", "mouse", "mushroom", "oak_tree",
    "orange", "orchid", "palm_tree", "pear", "pine_tree", "plate", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "seal", "shrew", "skunk", "skyscraper", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "tank", "tiger", "train", "trout", "tulip",
    "turtle", "willow_tree", "wolf",
)

CIFAR_FS_VAL: tuple[str, ...] = (
    "beaver", "beetle", "butterfly", "camel", "cattle", "crab", "crocodile", "flatfish", "lamp",
    "maple_tree", "motorcycle", "otter", "sea", "shark", "television", "tractor",
)

CIFAR_FS_TEST: tuple[str, ...] = (
    "baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck", "plain",
    "poppy", "rocket", "rose", "snail", "sweet_pepper", "table", "telephone", "wardrobe",
    "whale", "woman", "worm",
)

#: split name -> class names (sorted), in the project's split vocabulary (dfml_bench.data.SPLITS).
CIFAR_FS_SPLIT: dict[str, tuple[str, ...]] = {
    "train": CIFAR_FS_TRAIN,
    "val": CIFAR_FS_VAL,
    "test": CIFAR_FS_TEST,
}
