"""Teacher-student variants, unit level: the KD loss by hand, MPL's teacher update, BatchNorm, MPL resume."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nst_core.checkpoint import load_state
from nst_core.config import KDConfig, MPLConfig, config_from_dict
from nst_core.data import NSTData
from nst_core.distill import distillation_loss, kd_kl, kd_losses
from nst_core.imagesets import ImageSet
from nst_core.models import NormalizedClassifier
from nst_core.mpl import MLPTeacher, MPLBatch, mpl_step, train_mpl
from nst_core.training import make_optimizer
from nst_core.transfer import param_group_fn

STUDENT = torch.tensor([[1.0, 2.0, 0.0]])
TEACHER = torch.tensor([[2.0, 1.0, 0.0]])


def test_kd_loss_matches_hand_computation():
    """T = 2: KL(softmax(t/2) || softmax(s/2)) = 0.0996423 by hand; the loss scales it by T^2 = 4."""
    teacher_probs = F.softmax(TEACHER / 2.0, dim=1)
    assert kd_kl(STUDENT, teacher_probs, 2.0).item() == pytest.approx(4 * 0.09964225, abs=1e-6)
    label = F.one_hot(torch.tensor([0]), 3).float()
    # 0.25 * 4 * 0.0996423 + 0.75 * CE = 0.25 * 0.3985690 + 0.75 * 1.4076060 (CE = -log softmax(s)[0])
    assert distillation_loss(STUDENT, teacher_probs, label, 0.25, 2.0).item() == pytest.approx(1.1553467, abs=1e-6)


def test_kd_unlabeled_loss_is_only_the_kl_term():
    labeled, unlabeled = kd_losses(KDConfig(alpha=0.5, temperature=3.0))
    probs = F.softmax(TEACHER / 3.0, dim=1)
    assert unlabeled(STUDENT, probs).item() == pytest.approx(kd_kl(STUDENT, probs, 3.0).item())
    targets = torch.stack([probs, F.one_hot(torch.tensor([1]), 3).float()], dim=1)
    expected = 0.5 * kd_kl(STUDENT, probs, 3.0) + 0.5 * F.cross_entropy(STUDENT, torch.tensor([1]))
    assert labeled(STUDENT, targets).item() == pytest.approx(expected.item())


# A 2-class toy problem: class 0 where x0 > x1.
X_L = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.5], [0.5, 2.0]])
Y_L = torch.tensor([0, 1, 0, 1])
X_U = torch.tensor([[1.5, 0.2], [0.1, 1.2], [1.0, 0.3]])


def linear_pair(good_teacher: bool) -> tuple[nn.Linear, nn.Linear]:
    """A teacher whose labels are right (or all wrong) and a student that knows nothing yet."""
    teacher, student = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        sign = 1.0 if good_teacher else -1.0
        teacher.weight.copy_(sign * torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        teacher.bias.zero_()
        student.weight.zero_()
        student.bias.zero_()
    return teacher, student


def label_log_likelihood(teacher: nn.Module, pseudo: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.log_softmax(teacher(X_U), 1).gather(1, pseudo[:, None]).sum())


@pytest.mark.parametrize("good_teacher", [True, False])
def test_mpl_teacher_update_sign(good_teacher):
    """Labels that lower the student's labeled loss become more likely; labels that raise it, less likely."""
    teacher, student = linear_pair(good_teacher)
    pseudo = teacher(X_U).argmax(1)
    before = label_log_likelihood(teacher, pseudo)
    cfg = MPLConfig(teacher_label_weight=0.0, uda_weight=0.0)
    batch = MPLBatch(x_l=X_L, y_l=Y_L, x_u=X_U, t_l=X_L, t_u=X_U)
    stats = mpl_step(teacher, student, torch.optim.SGD(teacher.parameters(), lr=0.5),
                     torch.optim.SGD(student.parameters(), lr=1.0), batch, cfg)
    after = label_log_likelihood(teacher, pseudo)
    if good_teacher:
        assert stats["feedback"] > 0 and after > before
    else:
        assert stats["feedback"] < 0 and after < before


def test_mpl_one_step_by_hand():
    """Teacher' = teacher - lr_T * (CE_l(before) - CE_l(after)) * grad CE(T(x_u), labels) + supervised grad."""
    teacher, student = linear_pair(good_teacher=True)
    with torch.no_grad():
        teacher.weight.mul_(0.3)
        teacher.bias.copy_(torch.tensor([0.2, -0.1]))
    lr_t, lr_s, label_weight = 0.5, 1.0, 0.7
    # by hand (autograd for the gradients): the student's SGD step on the teacher's hard labels
    pseudo = teacher(X_U).argmax(1)
    w, b = student.weight.detach().clone().requires_grad_(), student.bias.detach().clone().requires_grad_()
    loss_before = F.cross_entropy(X_L @ w.T + b, Y_L).item()
    gw, gb = torch.autograd.grad(F.cross_entropy(X_U @ w.T + b, pseudo), (w, b))
    loss_after = F.cross_entropy(X_L @ (w - lr_s * gw).T + (b - lr_s * gb), Y_L).item()
    feedback = loss_before - loss_after
    tw, tb = teacher.weight.detach().clone().requires_grad_(), teacher.bias.detach().clone().requires_grad_()
    teacher_loss = (label_weight * F.cross_entropy(X_L @ tw.T + tb, Y_L)
                    + feedback * F.cross_entropy(X_U @ tw.T + tb, pseudo))
    dw, db = torch.autograd.grad(teacher_loss, (tw, tb))

    stats = mpl_step(teacher, student, torch.optim.SGD(teacher.parameters(), lr=lr_t),
                     torch.optim.SGD(student.parameters(), lr=lr_s),
                     MPLBatch(x_l=X_L, y_l=Y_L, x_u=X_U, t_l=X_L, t_u=X_U),
                     MPLConfig(teacher_label_weight=label_weight, uda_weight=0.0))
    assert stats["feedback"] == pytest.approx(feedback, abs=1e-6)
    assert torch.allclose(student.weight, w - lr_s * gw, atol=1e-6)
    assert torch.allclose(teacher.weight, tw - lr_t * dw, atol=1e-6)
    assert torch.allclose(teacher.bias, tb - lr_t * db, atol=1e-6)


def conv_bn_classifier(seed: int) -> NormalizedClassifier:
    """A tiny image classifier with BatchNorm (and dropout), on [0, 1] pixels."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Dropout(0.2), nn.Linear(4, 2))
    return NormalizedClassifier(net, [0.5] * 3, [0.25] * 3)


def test_mpl_bookkeeping_forwards_leave_batchnorm_alone():
    """After an MPL step the student's BatchNorm saw exactly one batch: its training batch x_u."""
    torch.manual_seed(0)
    x_l, x_u = torch.rand(6, 3, 8, 8), torch.rand(10, 3, 8, 8)
    y_l = torch.tensor([0, 1, 0, 1, 0, 1])
    student, teacher = conv_bn_classifier(1), conv_bn_classifier(2)
    reference = copy.deepcopy(student)
    student.train(), teacher.train(), reference.train()
    with torch.no_grad():
        reference(x_u)
    mpl_step(teacher, student, torch.optim.SGD(teacher.parameters(), lr=0.1),
             torch.optim.SGD(student.parameters(), lr=0.1),
             MPLBatch(x_l=x_l, y_l=y_l, x_u=x_u, t_l=x_l, t_u=x_u, t_uw=x_u), MPLConfig())
    bn, ref_bn = student.model[1], reference.model[1]
    assert int(bn.num_batches_tracked) == 1
    assert torch.equal(bn.running_mean, ref_bn.running_mean) and torch.equal(bn.running_var, ref_bn.running_var)
    assert student.training  # the eval-mode measurements restore train mode


def test_mlp_teacher_starts_as_the_stored_predictions():
    probs = F.softmax(torch.randn(5, 4), dim=1)
    assert torch.allclose(F.softmax(MLPTeacher(4, 8)(probs), dim=1), probs, atol=1e-6)


def toy_data() -> NSTData:
    """Random 16x16 images, 2 classes: 8 labeled, 32 unlabeled, 8 test."""
    gen = torch.Generator().manual_seed(0)

    def images(n: int, name: str) -> ImageSet:
        return ImageSet(torch.arange(n) % 2, 2, name, images=torch.randint(0, 256, (n, 3, 16, 16), generator=gen,
                                                                            dtype=torch.uint8))

    return NSTData(labeled=images(8, "labeled"), unlabeled=images(32, "unlabeled"), test=images(8, "test"))


TOY_CFG = {"name": "toy", "models": ["test_efficientnet"] * 2, "generations": 2, "method": "mpl",
           "noise": {"ra_magnitude": 5}, "train": {"batch_size": 4, "unlabel_ratio": 2, "lr": 0.01},
           "mpl": {"epochs": 2, "finetune_epochs": 1}}


class Interrupted(Exception):
    """Stands in for a kill right after an epoch's state was saved."""


@pytest.mark.parametrize("reduced", [False, True], ids=["full", "reduced"])
def test_mpl_resume_restores_both_models_and_optimizers(tmp_path, monkeypatch, reduced):
    """Interrupted after MPL epoch 1 and resumed with fresh models: the same student, teacher and optimizers."""
    import nst_core.mpl as mpl

    cfg = config_from_dict({**TOY_CFG, "mpl": {**TOY_CFG["mpl"], "reduced": reduced}})
    data, device = toy_data(), torch.device("cpu")
    whole = conv_bn_classifier(1)
    train_mpl(whole, conv_bn_classifier(2), data, cfg, 1, tmp_path / "whole", device, progress=False)

    real_save = mpl.save_state

    def save_then_die(path, state, *fingerprint):
        real_save(path, state, *fingerprint)
        raise Interrupted

    monkeypatch.setattr(mpl, "save_state", save_then_die)
    with pytest.raises(Interrupted):
        train_mpl(conv_bn_classifier(1), conv_bn_classifier(2), data, cfg, 1, tmp_path / "killed", device,
                  progress=False)
    assert load_state(tmp_path / "killed" / "mpl_state")["epoch"] == 1
    monkeypatch.setattr(mpl, "save_state", real_save)
    resumed = conv_bn_classifier(1)
    train_mpl(resumed, conv_bn_classifier(2), data, cfg, 1, tmp_path / "killed", device, progress=False)

    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    a, b = load_state(tmp_path / "whole" / "mpl_state"), load_state(tmp_path / "killed" / "mpl_state")
    for part in ("teacher", "student", "teacher_optimizer", "student_optimizer"):
        assert _flat(a[part]) == _flat(b[part]), part


def _flat(obj, prefix=""):
    """Nested state as {path: value}, tensors as lists, for exact comparison."""
    if isinstance(obj, dict):
        return {k: v for key, item in obj.items() for k, v in _flat(item, f"{prefix}/{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, item in enumerate(obj) for k, v in _flat(item, f"{prefix}/{i}").items()}
    return {prefix: obj.tolist() if isinstance(obj, torch.Tensor) else obj}


def test_discriminative_learning_rates_and_frozen_backbone():
    """Backbone at lr * scale through timm's lr_scale; a frozen backbone is left out of the optimizer."""
    import timm

    from nst_core.config import TrainConfig

    model = timm.create_model("test_efficientnet", num_classes=3)
    head = set(map(id, model.get_classifier().parameters()))
    optimizer, scheduler = make_optimizer(model, TrainConfig(lr=0.01, warmup_epochs=0), 10, 1,
                                          param_group_fn=param_group_fn(False, 0.1))
    scheduler.step_update(0)
    lrs = {("head" if id(g["params"][0]) in head else "backbone"): g["lr"] for g in optimizer.param_groups}
    assert lrs["backbone"] == pytest.approx(0.1 * lrs["head"]) and lrs["head"] == pytest.approx(0.01)
    optimizer, _ = make_optimizer(model, TrainConfig(), 10, 1, param_group_fn=param_group_fn(True))
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == head
    assert param_group_fn(False, 1.0) is None
    assert math.isclose(sum(p.numel() for p in model.get_classifier().parameters()),
                        sum(p.numel() for g in optimizer.param_groups for p in g["params"]))
