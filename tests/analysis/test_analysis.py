"""Representation comparison with known answers: linear CKA, k-NN overlap, activation maps."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from detpre.analysis.activations import HEAT_COLORS, activation_maps, normalize01, overlay
from detpre.analysis.cka import cka_matrix, linear_cka
from detpre.analysis.neighbors import knn_indices, neighbor_overlap, overlap_both_ways
from detpre.analysis.plots import draw_activation_comparison, draw_ap_vs_iou, plot_activation_comparison, plot_ap_vs_iou
from detpre.evaluation.iou_sweep import APSweep
from kaisteval.figures import PALETTE, finish

from conftest import load_tool

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def random_orthogonal(rng, n):
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------------------- CKA


@pytest.mark.parametrize("shape", [(50, 8), (20, 200)])  # feature form and Gram form
def test_cka_of_a_representation_with_itself_is_one(shape):
    x = np.random.default_rng(0).normal(size=shape)
    assert linear_cka(x, x) == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(60, 10), (15, 40)])
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(shape):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape)
    y = np.tanh(x @ rng.normal(size=(shape[1], 7))) + 0.3 * rng.normal(size=(shape[0], 7))
    base = linear_cka(x, y)
    assert 0.05 < base < 0.95  # a non-trivial value, so invariance is not 0 = 0 or 1 = 1
    q = random_orthogonal(rng, shape[1])
    assert linear_cka(x @ q, y) == pytest.approx(base)
    assert linear_cka(3.7 * x, 0.02 * y) == pytest.approx(base)
    assert linear_cka(x + 5.0, y) == pytest.approx(base)  # centering: a shift changes nothing
    # ... but not to an arbitrary (anisotropic) invertible map
    assert linear_cka(x * np.linspace(0.1, 10, shape[1]), y) != pytest.approx(base, abs=1e-3)


def test_cka_feature_and_gram_forms_agree():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 300))
    xc, yc = x - x.mean(0), y - y.mean(0)
    k, l_ = xc @ xc.T, yc @ yc.T
    direct = np.sum(k * l_) / (np.linalg.norm(k) * np.linalg.norm(l_))
    assert linear_cka(x, y) == pytest.approx(direct)  # 300 features: Gram form
    assert linear_cka(x, y[:, :4]) == pytest.approx(
        np.linalg.norm(yc[:, :4].T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc[:, :4].T @ yc[:, :4]))
    )


def test_cka_of_independent_random_features_is_low():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2000, 10)), rng.normal(size=(2000, 10))
    assert linear_cka(x, y) < 0.05


def test_cka_rejects_mismatched_or_constant_inputs():
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(ValueError, match="constant"):
        linear_cka(np.ones((5, 2)), np.arange(10.0).reshape(5, 2))


def test_cka_matrix_pairs_every_layer():
    rng = np.random.default_rng(4)
    a = {"res4": rng.normal(size=(40, 6)), "res5": rng.normal(size=(40, 9))}
    m = cka_matrix(a, {"res4": a["res4"], "res5": a["res5"] @ random_orthogonal(rng, 9)})
    assert m["res4"]["res4"] == pytest.approx(1.0) and m["res5"]["res5"] == pytest.approx(1.0)
    assert m["res4"]["res5"] < 0.5


# ------------------------------------------------------------------ neighbours


def test_neighbor_overlap_is_one_for_the_same_space_up_to_rotation_and_scale():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 6))
    np.testing.assert_array_equal(neighbor_overlap(x, x, 5), np.ones(40))
    # cosine neighbours do not change under a rotation and a global scale
    np.testing.assert_array_equal(neighbor_overlap(x, 2.5 * x @ random_orthogonal(rng, 6), 5), np.ones(40))


def test_neighbor_overlap_hand_built():
    # Six points on a line; neighbours by Euclidean distance, self excluded.
    a = np.array([[0.0], [1.0], [2.1], [10.0], [11.0], [12.2]])
    # b swaps points 2 and 3 (2 now sits with 4 and 5, 3 with 0 and 1)
    b = np.array([[0.0], [1.0], [11.5], [2.1], [11.0], [12.2]])
    np.testing.assert_array_equal(knn_indices(a, 1, "euclidean").ravel(), [1, 0, 1, 4, 3, 4])
    np.testing.assert_array_equal(knn_indices(b, 1, "euclidean").ravel(), [1, 0, 4, 1, 2, 2])
    # k = 2. In a: 0->{1,2}, 1->{0,2}, 2->{1,0}, 3->{4,5}, 4->{3,5}, 5->{4,3}
    #        In b: 0->{1,3}, 1->{0,3}, 2->{4,5}, 3->{1,0}, 4->{2,5}, 5->{2,4}
    expected = np.array([1, 1, 0, 0, 1, 1]) / 2
    np.testing.assert_array_equal(neighbor_overlap(a, b, 2, metric="euclidean"), expected)
    # The same k both ways counts the same intersections: symmetric.
    np.testing.assert_array_equal(neighbor_overlap(b, a, 2, metric="euclidean"), expected)


def test_neighbor_overlap_asymmetry_on_nested_clusters():
    """A's neighbourhoods refine B's: A -> B overlap is 1, B -> A is not."""
    rng = np.random.default_rng(6)
    k, big_k = 3, 15
    fine = np.repeat(np.arange(12), k + 1)  # 12 fine clusters of k + 1 points
    coarse = fine % 3  # 3 coarse clusters of big_k + 1 points, interleaved along A's line
    # A: tight fine clusters on a line; a fine cluster's neighbours belong to other coarse clusters.
    a = np.stack([fine * 100.0, np.zeros(len(fine))], axis=1) + rng.normal(scale=0.1, size=(len(fine), 2))
    # B: only the coarse grouping, members spread at random inside it.
    b = np.eye(3)[coarse] * 1000 + rng.normal(scale=1.0, size=(len(fine), 3))
    both = overlap_both_ways(a, b, k, big_k, metric="euclidean")
    assert both["a_to_b"] == pytest.approx(1.0)
    assert both["b_to_a"] < 0.6
    # with the same neighbourhood size both ways the measure is symmetric again
    same = overlap_both_ways(a, b, k, k, metric="euclidean")
    assert same["a_to_b"] == pytest.approx(same["b_to_a"])


def test_neighbor_overlap_rejects_bad_sizes():
    x = np.random.default_rng(7).normal(size=(10, 3))
    with pytest.raises(ValueError, match="same images"):
        neighbor_overlap(x, x[:9], 2)
    with pytest.raises(ValueError, match="k must be in"):
        neighbor_overlap(x, x, 10)
    with pytest.raises(ValueError, match="at least k"):
        neighbor_overlap(x, x, 3, 2)


# ------------------------------------------------------------- activation maps


def test_activation_maps_shape_normalization_and_top_channel():
    fmap = np.zeros((4, 6, 8), dtype=np.float32)
    fmap[1, 2:4, 3:5] = 1.0  # a small strong blob
    fmap[2] = 0.3  # weak but everywhere: largest channel mean
    maps = activation_maps(fmap)
    assert maps.summed.shape == maps.top.shape == (6, 8)
    assert maps.summed.min() == 0.0 and maps.summed.max() == pytest.approx(1.0)
    assert maps.top_channel == 2
    assert maps.summed[2, 3] == pytest.approx(1.0) and maps.summed[0, 0] == 0.0
    np.testing.assert_array_equal(maps.top, np.zeros((6, 8)))  # a constant channel shows nothing
    with pytest.raises(ValueError, match="channels, height, width"):
        activation_maps(fmap[0])


def test_overlay_upsamples_to_the_image():
    image = np.full((60, 80, 3), 128, np.uint8)
    heat = normalize01(np.arange(12.0).reshape(3, 4))
    out = overlay(image, heat, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out[0, 0], out[-1, -1])  # cold corner vs hot corner


def test_activation_comparison_png(tmp_path):
    rng = np.random.default_rng(8)
    images = [
        ("visible", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)),
        ("thermal", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)),
    ]
    maps = {name: [activation_maps(rng.random((5, 4, 5))) for _ in images] for name in ("det", "cls")}
    fig = draw_activation_comparison(images, maps, "res4")
    # 2 rows x 5 panels, and a colour bar that reads the overlays: their colours, from 0 to 1.
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(panels) == 10
    top = [m[0].top_channel for m in maps.values()]
    titles = ["visible", "det: res4 sum", f"det: res4 ch {top[0]}", "cls: res4 sum", f"cls: res4 ch {top[1]}"]
    assert [ax.get_title() for ax in panels[:5]] == titles
    (mappable,) = [c for c in bar.collections if c.cmap.name == "detpre-heat"]  # the bar's colour mesh
    np.testing.assert_allclose(mappable.cmap(np.linspace(0, 1, 256))[:, :3], HEAT_COLORS / 255.0)
    assert mappable.norm.vmin == 0.0 and mappable.norm.vmax == 1.0
    assert bar.get_ylabel() == "activation (min-max scaled per map)"
    fig.canvas.draw()
    assert bar.get_window_extent().x0 >= max(ax.get_window_extent().x1 for ax in panels)  # right of the maps
    path = tmp_path / "maps.png"
    plot_activation_comparison(images, maps, str(path), "res4")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]  # 5 columns, 2 rows


def sweep(top: float) -> APSweep:
    thresholds = np.round(np.arange(0.1, 0.95, 0.1), 2)
    return APSweep(thresholds, top - 50 * thresholds, top - 30)


def test_ap_vs_iou_colours_models_and_styles_protocols(tmp_path):
    table = {
        "scratch": {"coco": sweep(80), "voc07": sweep(82), "voc_area": sweep(81)},
        "imagenet": {"voc_area": sweep(86), "coco": sweep(85), "voc07": sweep(87)},
    }
    fig = finish(draw_ap_vs_iou(table))
    ax = fig.axes[0]
    lines = ax.get_lines()
    # Protocols in one order whatever the dict's: COCO, VOC area, VOC 11-point.
    assert [line.get_ydata()[0] for line in lines] == pytest.approx([75, 76, 77, 80, 81, 82])
    assert [line.get_color() for line in lines] == [PALETTE[0]] * 3 + [PALETTE[1]] * 3
    assert [line.get_linestyle() for line in lines[:3]] == [line.get_linestyle() for line in lines[3:]]
    assert len({line.get_linestyle() for line in lines}) == 3
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "model",
        "scratch",
        "imagenet",
        "protocol",
        "COCO",
        "VOC area",
        "VOC 11-point",
    ]
    assert legend.get_window_extent().x0 > ax.get_window_extent().x1
    assert list(ax.get_xticks()) == pytest.approx(list(np.arange(1, 10) / 10))
    assert ax.get_ylim() == (0.0, pytest.approx(ax.get_ylim()[1])) and ax.get_ylim()[1] <= 100
    # Only COCO: the protocol is not a level of the legend.
    single = finish(draw_ap_vs_iou({"a": {"coco": sweep(80)}, "b": {"coco": sweep(70)}})).axes[0]
    assert [t.get_text() for t in single.get_legend().get_texts()] == ["model", "a", "b"]
    assert plot_ap_vs_iou(table, str(tmp_path / "ap.png")) == str(tmp_path / "ap.png")


# --------------------------------------------------------------- compare tool


def tiny_backbone_args(side, weights):
    return [
        f"--{side}-weights",
        str(weights),
        f"--{side}-opts",
        "MODEL.RESNETS.DEPTH",
        "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "64",
        "MODEL.RESNETS.NORM",
        "BN",
    ]


def save_random_r18(path, seed):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_backbone

    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS, cfg.MODEL.RESNETS.NORM = 18, 64, "BN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4", "res5"]
    torch.manual_seed(seed)
    backbone = build_backbone(cfg)
    torch.save({"model": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}}, path)


def test_compare_backbones_tool_end_to_end(tmp_path, capsys):
    main = load_tool("compare_backbones").main

    rng = np.random.default_rng(9)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(tmp_path / "lwir.png")  # thermal: 1 channel
    wa, wb = tmp_path / "a.pth", tmp_path / "b.pth"
    save_random_r18(wa, 0)
    save_random_r18(wb, 1)
    out = tmp_path / "out"

    def run(b_weights):
        argv = [
            *tiny_backbone_args("a", wa),
            *tiny_backbone_args("b", b_weights),
            "--images",
            str(folder),
            "--size",
            "32",
            "--k",
            "2",
            "--big-k",
            "4",
            "--map-size",
            "64",
            "--pair",
            str(folder / "00.png"),
            str(tmp_path / "lwir.png"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--output-dir",
            str(out),
        ]
        assert main(argv) == 0
        return json.loads((out / "comparison.json").read_text())

    same = run(wa)  # one checkpoint twice
    assert same["knn"]["res5"] == {"a_to_b": 1.0, "b_to_a": 1.0}
    assert same["cka"]["res4"]["res4"] == pytest.approx(1.0)
    assert (out / "activation_maps.png").read_bytes()[:8] == PNG_MAGIC
    assert len(same["top_channels"]["A"]) == 2  # the visible and the thermal frame
    other = run(wb)  # B: another random network
    assert other["cka"]["res4"]["res4"] < 1.0 - 1e-6
    assert "k-NN overlap" in capsys.readouterr().out


BGRT_OPTS = [
    "INPUT.FORMAT",
    "BGRT",
    "INPUT.DATASET_MAPPER_NAME",
    "MultispectralDatasetMapper",
    "MODEL.PIXEL_MEAN",
    "[100.0, 100.0, 100.0, 40.0]",
    "MODEL.PIXEL_STD",
    "[50.0, 50.0, 50.0, 20.0]",
]


def test_compare_backbones_takes_kaist_pairs(tmp_path, capsys):
    """A BGRT (early-fusion) backbone reads visible + LWIR pairs; a BGR one the visible frames."""
    main = load_tool("compare_backbones").main

    rng = np.random.default_rng(3)
    root = tmp_path / "kaist" / "set06" / "V000"
    for modality, channels in (("visible", 3), ("lwir", 1)):
        (root / modality).mkdir(parents=True)
        for i in range(8):
            shape = (40, 48, 3) if channels == 3 else (40, 48)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(root / modality / f"I{i:05d}.png")
    (root / "visible" / "I00099.png").write_bytes((root / "visible" / "I00000.png").read_bytes())  # no LWIR twin
    wb = tmp_path / "b.pth"
    save_random_r18(wb, 1)
    out = tmp_path / "out"
    argv = [
        "--a-opts",
        "MODEL.RESNETS.DEPTH",
        "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "64",
        "MODEL.RESNETS.NORM",
        "BN",
        *BGRT_OPTS,
        *tiny_backbone_args("b", wb),
        "--images",
        str(tmp_path / "kaist"),
        "--size",
        "32",
        "--k",
        "2",
        "--big-k",
        "4",
        "--map-size",
        "64",
        "--cache-dir",
        "",
        "--output-dir",
        str(out),
        "--pair",
        str(root / "visible" / "I00001.png"),
        str(root / "lwir" / "I00001.png"),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "comparison.json").read_text())
    assert report["images"] == 8  # pairs, listed by their visible frame; the lone visible frame is left out
    assert set(report["cka"]) == {"res4", "res5"} and len(report["top_channels"]["A"]) == 2
    assert (out / "activation_maps.png").read_bytes()[:8] == PNG_MAGIC
