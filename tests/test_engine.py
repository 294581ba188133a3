"""The optimisers and parameter groups of the training loop, against the reference's definitions; what each step
reports."""
import pytest
import torch

from stages.core.checkpoint import TrainState
from stages.core.engine import Terms, make_sgd, poly_lambda, reference_param_groups, train_one_epoch
from stages.core.runtime import make_runtime
from stages.models.classifier import CAMClassifier


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3), torch.nn.Conv2d(3, 1, 1))


def run_steps(optimizer, model, grads):
    for g in grads:
        optimizer.zero_grad()
        for p, gp in zip(model.parameters(), g):
            p.grad = gp.clone()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def test_reference_optimizer_is_the_references_polyoptimizer_construction():
    # the reference: PolyOptimizer(groups, lr, momentum=0.9, weight_decay=wd, nesterov=True) calls
    # torch.optim.SGD(params, lr, weight_decay, nesterov=nesterov): the decay lands in the momentum slot
    cfg = {"optimizer": "reference", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
    a, b = tiny_model(), tiny_model()
    torch.manual_seed(1)
    grads = [[torch.randn_like(p) for p in a.parameters()] for _ in range(5)]
    ours = run_steps(make_sgd(reference_param_groups(a, lambda n: n.startswith("2."), cfg), cfg), a, grads)
    ref_groups = [{"params": [p for n, p in b.named_parameters() if n.startswith("2.") == new and ("weight" in n) == w],
                   "lr": 0.1 * mult, "weight_decay": 1e-4 if w else 0}
                  for new, w, mult in [(False, True, 1), (False, False, 2), (True, True, 10), (True, False, 20)]]
    ref = run_steps(torch.optim.SGD(ref_groups, 0.1, 1e-4, nesterov=True), b, grads)
    for x, y in zip(ours, ref):
        assert torch.equal(x, y)


def test_reference_first_step_by_hand():
    # nesterov, momentum m = wd: step 1 moves by lr * (1 + m) * (g + wd * p) for a decayed weight
    p = torch.nn.Parameter(torch.tensor([2.0]))
    cfg = {"optimizer": "reference", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
    opt = make_sgd([{"params": [p], "lr": 0.1, "weight_decay": 1e-4}], cfg)
    p.grad = torch.tensor([0.5])
    opt.step()
    assert p.item() == pytest.approx(2.0 - 0.1 * (1 + 1e-4) * (0.5 + 1e-4 * 2.0), abs=1e-7)


@pytest.mark.parametrize("stage_lr,momentum_lr", [(0.1, 0.01), (0.007, 0.0007)])
def test_real_momentum_at_a_tenth_of_the_lr_steps_like_the_reference(stage_lr, momentum_lr):
    """Under a steady gradient the reference moves lr * g per step; sgd with momentum 0.9 moves lr / (1 - 0.9) * g."""
    def steady_step(cfg):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = make_sgd([{"params": [p], "lr": cfg["lr"], "weight_decay": 0.0}], cfg)
        for _ in range(200):
            before = p.item()
            p.grad = torch.ones(1)
            opt.step()
        return before - p.item()

    reference = steady_step({"optimizer": "reference", "lr": stage_lr, "momentum": 0.9, "weight_decay": 1e-4})
    momentum = steady_step({"optimizer": "sgd", "lr": momentum_lr, "momentum": 0.9, "weight_decay": 1e-4})
    real_at_same_lr = steady_step({"optimizer": "sgd", "lr": stage_lr, "momentum": 0.9, "weight_decay": 1e-4})
    assert reference == pytest.approx(stage_lr, rel=1e-3)
    assert momentum == pytest.approx(reference, rel=1e-3)
    assert real_at_same_lr == pytest.approx(10 * reference, rel=1e-3)  # what the paper config ran before


def test_classifier_groups_as_the_reference():
    model = CAMClassifier("resnet18", 4)
    cfg = {"lr": 0.1, "weight_decay": 1e-4}
    groups = reference_param_groups(model, model.is_new, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    by_lr = {g["lr"]: ({names[id(p)] for p in g["params"]}, g["weight_decay"]) for g in groups}
    assert sorted(by_lr) == pytest.approx([0.1, 0.2, 1.0])  # the head has no bias: no 20x group
    assert by_lr[1.0] == ({"classifier.weight"}, 1e-4)
    assert "backbone.conv1.weight" in by_lr[0.1][0] and "backbone.bn1.weight" in by_lr[0.1][0]
    assert by_lr[0.1][1] == 1e-4
    assert "backbone.bn1.bias" in by_lr[0.2][0] and by_lr[0.2][1] == 0.0
    assert all(n.endswith("bias") for n in by_lr[0.2][0])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_classifier_head_is_kaiming_normal():
    torch.manual_seed(0)
    w = CAMClassifier("resnet18", 20).classifier.weight  # fan_in 512: std sqrt(2 / 512) = 0.0625
    assert w.std().item() == pytest.approx(0.0625, rel=0.05)
    assert w.mean().abs().item() < 0.005


def test_poly_decay_power():
    f = poly_lambda(100)
    assert f(0) == 1.0 and f(50) == pytest.approx(0.5**0.9) and f(100) == 0.0


def test_each_step_reports_the_loss_terms_and_the_scalars_its_loss_used():
    """What TensorBoard shows of a step (the classifier's alpha) is the value its loss was computed with."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    cfg = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9}
    optimizer = make_sgd([{"params": list(model.parameters()), "lr": 0.1, "weight_decay": 0.0}], cfg)
    rt = make_runtime("cpu", precision="fp32")
    train = TrainState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(4)), rt.grad_scaler())

    def step(batch, iteration, max_iteration):
        weight = iteration / max_iteration
        loss = model(batch["x"]).pow(2).mean()
        return Terms({"loss": loss, "total": weight * loss}, {"weight": weight})

    reported = []
    batches = [{"x": torch.randn(2, 2)} for _ in range(4)]  # two optimizer steps of two micro-steps
    sums = train_one_epoch(model, step, train, batches, 2, 4, 2, rt,
                           lambda it, values, lr, scalars: reported.append((it, set(values), lr, scalars)))
    assert reported == [(2, {"loss", "total"}, 0.1, {"weight": 0.5}),
                        (3, {"loss", "total"}, pytest.approx(0.1 * 0.75 ** 0.9), {"weight": 0.75})]
    assert set(sums) == {"loss", "total"}  # the history holds the loss terms only
