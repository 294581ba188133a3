"""Backbones: output stride 16, unknown names, pretrained weights from a file, the hub cache, or a clear error."""
import os
import socket
import subprocess
import sys

import huggingface_hub
import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from conftest import ROOT, classifier_cfg, index_file, training_job

from stages import StageError
from stages.models.affinity import AffinityNet
from stages.models.backbone import create_backbone, weights_tag
from stages.models.segmentation import create_deeplab


@pytest.mark.parametrize("name", ["resnet18", "resnest14d"])
def test_backbones_end_at_output_stride_16(name):
    net = create_backbone(name).eval()
    assert net.feature_info.reduction()[-1] == 16
    assert net(torch.zeros(1, 3, 64, 64))[-1].shape[-2:] == (4, 4)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(StageError, match="backbone: unknown timm model 'resnet17'"):
        create_backbone("resnet17")


def test_weights_load_from_a_local_file(tmp_path):
    reference = timm.create_model("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    net = create_backbone("resnet18", pretrained=True, pretrained_path=str(path))
    assert torch.equal(net.conv1.weight, reference.conv1.weight)


def test_weights_tag_names_the_exact_weights(tmp_path):
    assert weights_tag("resnet50", True) == "resnet50.a1_in1k"  # timm's default recipe, not torchvision's weights
    assert weights_tag("resnet50.tv_in1k", True) == "resnet50.tv_in1k"  # the reference's
    assert weights_tag("resnest101e", True) == "resnest101e.in1k"
    assert weights_tag("resnet18", False) is None
    path = tmp_path / "w.pth"
    path.write_bytes(b"")
    assert weights_tag("resnet18", True, str(path)) == str(path.resolve())


def test_missing_local_weights_file_is_named(tmp_path):
    with pytest.raises(StageError, match="pretrained_path: .*missing.pth is not a file"):
        create_backbone("resnet18", pretrained=True, pretrained_path=str(tmp_path / "missing.pth"))


def test_affinity_net_freezes_its_backbone_and_predicts_at_stride_4():
    net = AffinityNet("resnet18", head_channels=8).train()
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert not net.backbone.training
    assert net(torch.zeros(2, 3, 64, 96)).shape == (2, 16, 24)
    prob = net.boundary_prob(torch.zeros(1, 3, 64, 96))
    assert prob.shape == (1, 16, 24) and ((prob >= 0) & (prob <= 1)).all()


def reference_edge(net: AffinityNet, x: torch.Tensor) -> torch.Tensor:
    """The reference's AffinityNet forward, computed independently from the backbone's named stages: stage 1 ends
    with the stem's max pool; each edge layer is conv, GroupNorm, then (stages 3-5) an upsampling by 2, 4, 4, and
    a ReLU; the upsampled maps are cropped to stage 2's size."""
    b = net.backbone
    x1 = b.maxpool(b.act1(b.bn1(b.conv1(x))))
    x2 = b.layer1(x1)
    x3 = b.layer2(x2)
    x4 = b.layer3(x3)
    x5 = b.layer4(x4)
    edges = []
    for head, f, factor in zip(net.heads, (x1, x2, x3, x4, x5), (1, 1, 2, 4, 4)):
        e = head(f)
        if factor > 1:
            e = F.interpolate(e, scale_factor=factor, mode="bilinear", align_corners=False)
        edges.append(F.relu(e))
    h, w = edges[1].shape[-2:]
    return net.boundary(torch.cat([e[..., :h, :w] for e in edges], 1))[:, 0]


@pytest.mark.parametrize("size", [(64, 96), (75, 61)])
def test_affinity_net_computes_the_reference_edge_layers(size):
    torch.manual_seed(0)
    net = AffinityNet("resnet18", head_channels=8).eval()
    for p in net.heads.parameters():  # GroupNorm starts as the identity: give it a shift so that ReLU's place counts
        torch.nn.init.normal_(p)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = reference_edge(net, x)
        assert torch.allclose(net(x), expected, atol=1e-5)
        # inference: image and flip zero-padded at the bottom-right onto the training crop, cropped back, averaged
        net.canvas = 96
        both = F.pad(torch.cat([x[:1], x[:1].flip(-1)]), (0, 96 - size[1], 0, 96 - size[0]))
        edge = reference_edge(net, both)[..., : -(-size[0] // 4), : -(-size[1] // 4)]
        assert torch.allclose(net.boundary_prob(x[:1]), torch.sigmoid(edge[:1] / 2 + edge[1:].flip(-1) / 2), atol=1e-5)


@pytest.mark.parametrize("size", [(64, 96), (50, 70)])
def test_a_strided_stem_feeds_the_first_head_the_stride_2_features_resized(size):
    torch.manual_seed(0)
    pooled = AffinityNet("resnet18", head_channels=8).eval()
    strided = AffinityNet("resnet18", head_channels=8, stem="strided").eval()
    strided.load_state_dict(pooled.state_dict())
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        stem = strided.backbone(x)[0]
        first = strided.head_map(strided.heads[0], stem, 2)
        deeper = strided.head_map(strided.heads[1], strided.backbone(x)[1], 4)
        assert first.shape == deeper.shape == pooled.head_map(pooled.heads[0], stem, 2).shape
        expected = F.relu(F.interpolate(strided.heads[0](stem), size=first.shape[-2:], mode="bilinear", align_corners=False))
        assert torch.equal(first, expected)
        assert strided(x).shape == pooled(x).shape and not torch.allclose(strided(x), pooled(x))
    with pytest.raises(ValueError, match="stem 'max'"):
        AffinityNet("resnet18", stem="max")


def test_resnest_last_stage_first_block_computes_as_the_references():
    # the reference's ResNeSt at output stride 16 (core/arch_resnest, dilation 2): the last stage's first block is
    # "is_first": a 3x3 average pool of stride 1 after the split-attention convolution, and a shortcut of a 1x1
    # convolution and BatchNorm only; computed here from the block's own layers
    torch.manual_seed(0)
    block = create_backbone("resnest14d").eval().layer4[0]
    x = torch.randn(2, 1024, 5, 6)
    with torch.no_grad():
        main = block.conv2(block.act1(block.bn1(block.conv1(x))))
        main = block.bn3(block.conv3(F.avg_pool2d(main, 3, 1, padding=1)))  # count_include_pad, as nn.AvgPool2d
        shortcut = block.downsample[2](block.downsample[1](x))
        assert torch.allclose(block(x), F.relu(main + shortcut), atol=1e-5)
    plain = timm.create_model("resnest14d", features_only=True, output_stride=16)
    assert create_backbone("resnest14d").state_dict().keys() == plain.state_dict().keys()  # weights load as before


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_last_stage_keeps_stride_16_without_dilation_as_the_reference(name):
    # the reference's ResNet (core/arch_resnet, strides (2, 2, 2, 1)) drops the last stride and dilates nothing
    net = create_backbone(name).eval()
    convs = [m for m in net.layer4.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs and all(m.dilation == (1, 1) and m.padding == (1, 1) for m in convs)
    assert [tuple(f.shape[-2:]) for f in net(torch.zeros(1, 3, 64, 96))][-2:] == [(4, 6), (4, 6)]


@pytest.mark.parametrize("name", ["resnet50", "resnest50d", "resnest101e", "resnest269e"])
def test_the_papers_backbones_end_at_output_stride_16(name):
    net = create_backbone(name).eval()
    assert net.feature_info.reduction()[-1] == 16
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 64, 64))[-1].shape[-2:] == (4, 4)


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def network(monkeypatch) -> list[tuple[str, object, float | None]]:
    """Every name lookup and TCP connection the process tries ("lookup", host, None) and ("connect", address,
    timeout); they still happen."""
    tried = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def recorded_connect(sock, address):
        tried.append(("connect", address, sock.gettimeout()))
        return connect(sock, address)

    def recorded_lookup(host, *args, **kwargs):
        tried.append(("lookup", host, None))
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", recorded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", recorded_lookup)
    return tried


def test_offline_without_weights_fails_at_once_and_says_how_to_provide_them(empty_hub_cache, network, monkeypatch):
    """At once: without trying the network (huggingface_hub would retry for about a minute per file)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(StageError, match="backbone 'resnet50': no ImageNet weights: .* set pretrained_path .* pretrained: false"):
        create_backbone("resnet50", pretrained=True)
    assert network == []


def test_unreachable_hub_fails_at_once(empty_hub_cache, network, monkeypatch):
    """At once: one connection tried, with a timeout, and no download retried after it."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    with pytest.raises(StageError, match=r"http://127.0.0.1:9 is unreachable"):
        create_deeplab("resnet18", 5, pretrained=True)
    connects = [(address, timeout) for kind, address, timeout in network if kind == "connect"]
    assert len(connects) == 1 and connects[0][0] == ("127.0.0.1", 9) and connects[0][1] is not None


def test_weights_in_the_hub_cache_load_offline(empty_hub_cache, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    reference = timm.create_model("resnet18")
    repo = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    snapshot = empty_hub_cache / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    safetensors.torch.save_file(reference.state_dict(), snapshot / "model.safetensors")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs/main").write_text("0" * 40)
    net = create_backbone("resnet18", pretrained=True)
    assert torch.equal(net.conv1.weight, reference.conv1.weight)


def test_training_stops_before_its_first_step_without_weights(tiny_index, tmp_path):
    """The stage's command line, offline with an empty hub cache: exit 2, one line, no model, no checkpoint."""
    job = training_job("train_classifier", index_file(tiny_index, tmp_path), tiny_index.layout.split_file("train"),
                       tmp_path / "m", classifier_cfg(backbone="resnet50", pretrained=True, epochs=1, batch_size=2),
                       tmp_path / "ckpt.pt", wildcards={"seed": 0, "variant": "puzzle"})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "stages.train_classifier", job.to_json()], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: backbone 'resnet50': no ImageNet weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image_labels.json"]
