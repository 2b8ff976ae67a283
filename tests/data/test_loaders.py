import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from assay.data import load_dataset
from assay.errors import InputError


def one_line(e) -> bool:
    return "\n" not in str(e.value)


# ----------------------------------------------------------------------------- numpy
def test_npz_with_every_field(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((10, 1, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 3, member=np.arange(10) < 4,
             x_ood=rng.random((3, 1, 4, 4)), group_sex=np.array(["f", "m"] * 5),
             class_names=np.array(["a", "b", "c"]))
    d = load_dataset(tmp_path / "d.npz")
    assert d.name == "d" and d.kind == "image" and torch.equal(d.x, torch.from_numpy(x))
    assert d.y.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert d.member.sum() == 4 and d.x_ood.shape == (3, 1, 4, 4)
    assert list(d.groups) == ["sex"] and d.groups["sex"][1] == "m"
    assert d.class_names == ["a", "b", "c"]


def test_npz_uppercase_keys_and_label_key(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((4, 3)), Y=np.zeros(4), target=np.array([1, 0, 1, 0]))
    assert load_dataset(tmp_path / "d.npz").y.tolist() == [0, 0, 0, 0]
    assert load_dataset(tmp_path / "d.npz", label="target").y.tolist() == [1, 0, 1, 0]
    with pytest.raises(InputError, match="no 'nope' array"):
        load_dataset(tmp_path / "d.npz", label="nope")


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "nox.npz", inputs=np.ones((2, 2)))
    with pytest.raises(InputError, match="no 'x' array .*inputs") as e:
        load_dataset(tmp_path / "nox.npz")
    assert one_line(e)
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(InputError, match="pickled"):
        load_dataset(tmp_path / "obj.npz")
    np.savez(tmp_path / "ragged.npz", x=np.ones((4, 2)), y=np.zeros(3))
    with pytest.raises(InputError, match="4 inputs but 3 labels"):
        load_dataset(tmp_path / "ragged.npz")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 3)))
    with pytest.raises(InputError, match="no samples"):
        load_dataset(tmp_path / "empty.npz")
    np.savez(tmp_path / "fl.npz", x=np.ones((2, 2)), y=np.array([0.5, 1.0]))
    with pytest.raises(InputError, match="whole numbers"):
        load_dataset(tmp_path / "fl.npz")


def test_npy_with_labels_file(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((5, 2), dtype=np.float32))
    np.save(tmp_path / "y.npy", np.array([[0], [1], [0], [1], [1]]))
    d = load_dataset(tmp_path / "x.npy", labels=tmp_path / "y.npy", name="mine")
    assert d.name == "mine" and d.y.tolist() == [0, 1, 0, 1, 1]
    assert load_dataset(tmp_path / "x.npy").y is None
    np.save(tmp_path / "y3.npy", np.zeros(3))
    with pytest.raises(InputError, match="5 inputs but .*3 labels"):
        load_dataset(tmp_path / "x.npy", labels=tmp_path / "y3.npy")
    with pytest.raises(InputError, match="does not exist"):
        load_dataset(tmp_path / "x.npy", labels=tmp_path / "missing.npy")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(InputError, match="dtype <U1"):
        load_dataset(tmp_path / "s.npy")


def test_missing_file_unknown_extension_and_ood(tmp_path):
    with pytest.raises(InputError, match="nothing.csv does not exist"):
        load_dataset(tmp_path / "nothing.csv")
    (tmp_path / "d.xlsx").write_bytes(b"x")
    with pytest.raises(InputError, match="unknown data format '.xlsx'"):
        load_dataset(tmp_path / "d.xlsx")
    np.save(tmp_path / "a.npy", np.zeros((4, 3)))
    np.save(tmp_path / "b.npy", np.ones((2, 3)))
    np.save(tmp_path / "c.npy", np.ones((2, 5)))
    assert load_dataset(tmp_path / "a.npy", ood=tmp_path / "b.npy").x_ood.shape == (2, 3)
    with pytest.raises(InputError, match="OOD set has per-sample shape"):
        load_dataset(tmp_path / "a.npy", ood=tmp_path / "c.npy")


# ----------------------------------------------------------------------------- tables
@pytest.fixture
def frame():
    return pd.DataFrame({
        "age": [25, 40, 33, 51], "income": [1.0, 2.5, 3.0, 0.5], "sex": ["f", "m", "f", "m"],
        "outcome": ["no", "yes", "yes", "no"], "in_train": [1, 0, 1, 0],
    })


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_with_column_spec(tmp_path, frame, fmt):
    path = tmp_path / f"t.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    d = load_dataset(path, label="outcome", sensitive="sex", member="in_train")
    assert d.feature_names == ["age", "income"] and d.kind == "tabular"
    np.testing.assert_allclose(d.x.numpy(), frame[["age", "income"]].to_numpy())
    assert d.class_names == ["no", "yes"] and d.y.tolist() == [0, 1, 1, 0]
    assert d.groups["sex"].tolist() == ["f", "m", "f", "m"]
    assert d.member.tolist() == [True, False, True, False]
    d2 = load_dataset(path, label="outcome", features=["income"], sensitive=["sex"])
    assert d2.feature_names == ["income"] and d2.x.shape == (4, 1)


def test_table_label_column_autodetect_and_numeric_labels(tmp_path):
    pd.DataFrame({"a": [0.1, 0.2], "label": [1, 0]}).to_csv(tmp_path / "t.csv", index=False)
    d = load_dataset(tmp_path / "t.csv")
    assert d.y.tolist() == [1, 0] and d.feature_names == ["a"]


def test_table_errors(tmp_path, frame):
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(InputError, match="sex, outcome are not numeric.*encode") as e:
        load_dataset(path)
    assert one_line(e)
    with pytest.raises(InputError, match="no column\\(s\\) 'gender'.*age, income"):
        load_dataset(path, label="outcome", sensitive="gender")
    with pytest.raises(InputError, match="both features and"):
        load_dataset(path, label="outcome", features="age,sex", sensitive="sex")
    frame.assign(in_train=[1, 2, 0, 0]).to_csv(path, index=False)
    with pytest.raises(InputError, match="membership"):
        load_dataset(path, label="outcome", sensitive="sex", member="in_train")
    frame.assign(age=[1, None, 3, 4]).to_csv(path, index=False)
    with pytest.raises(InputError, match="age have missing values"):
        load_dataset(path, label="outcome", sensitive="sex", member="in_train")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="is empty"):
        load_dataset(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="no rows"):
        load_dataset(tmp_path / "header.csv")


# ----------------------------------------------------------------------------- images
def write_image(path, mode, size, value):
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    Image.fromarray(np.full((size[1], size[0], *channels), value, dtype=np.uint8), mode).save(path)


def test_image_folder_classes_sorted_and_scaled(tmp_path):
    for cls, value in (("zebra", 255), ("ant", 51)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            write_image(tmp_path / cls / f"{i}.png", "RGB", (6, 4), value)
    (tmp_path / "ant" / "notes.txt").write_text("ignored")
    d = load_dataset(tmp_path)
    assert d.class_names == ["ant", "zebra"] and d.y.tolist() == [0, 0, 1, 1]
    assert d.x.shape == (4, 3, 4, 6) and d.kind == "image"
    assert d.x[0].max().item() == pytest.approx(0.2) and d.x[3].min().item() == 1.0
    r = load_dataset(tmp_path, image_size=8)
    assert r.x.shape == (4, 3, 8, 8)


def test_image_folder_mixed_modes_use_majority(tmp_path):
    (tmp_path / "a").mkdir()
    write_image(tmp_path / "a" / "0.png", "L", (4, 4), 100)
    write_image(tmp_path / "a" / "1.png", "L", (4, 4), 100)
    write_image(tmp_path / "a" / "2.jpg", "RGB", (4, 4), 100)
    d = load_dataset(tmp_path)
    assert d.x.shape == (3, 1, 4, 4)
    (tmp_path / "b").mkdir()
    for i in range(2):
        write_image(tmp_path / "b" / f"{i}.png", "RGBA", (4, 4), 200)
    assert load_dataset(tmp_path).x.shape == (5, 3, 4, 4)  # 3 colour vs 2 grey: RGB, alpha dropped


def test_image_folder_errors(tmp_path):
    with pytest.raises(InputError, match="no class sub-folders"):
        load_dataset(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(InputError, match="no images"):
        load_dataset(tmp_path)
    write_image(tmp_path / "cat" / "a.png", "L", (4, 4), 0)
    write_image(tmp_path / "cat" / "b.png", "L", (4, 4), 0)
    write_image(tmp_path / "cat" / "c.png", "L", (5, 3), 0)
    with pytest.raises(InputError, match="different sizes .*c.png.*--image-size") as e:
        load_dataset(tmp_path)
    assert one_line(e)
    assert load_dataset(tmp_path, image_size=(4, 4)).x.shape == (3, 1, 4, 4)
    (tmp_path / "cat" / "d.png").write_bytes(b"broken")
    with pytest.raises(InputError, match="cannot read image .*d.png"):
        load_dataset(tmp_path, image_size=4)
    with pytest.raises(InputError, match="labels= is for .npy"):
        load_dataset(tmp_path, labels=tmp_path / "y.npy")
