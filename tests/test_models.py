"""Backbones: output stride 16, unknown names, local pretrained weights."""
import pytest
import timm
import torch

from stages import StageError
from stages.models.affinity import AffinityNet
from stages.models.backbone import create_backbone


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
