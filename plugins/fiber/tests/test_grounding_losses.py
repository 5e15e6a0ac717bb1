"""Losses of the FIBER grounding stage: token focal loss, centerness-weighted GIoU, centerness BCE."""

import importlib

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from vlfw_fiber import grounding


def _focal_by_hand(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return -(alpha_t * (1 - p_t) ** gamma * torch.log(p_t.clamp(min=1e-12))).sum()


def test_token_focal_loss_equals_torchvision_on_real_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 4) * 3
    targets = (torch.rand(2, 7, 4) > 0.7).float()
    text_mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    garbage = logits.clone()
    garbage[~text_mask[:, None, :].expand_as(logits)] = 50.0  # padded tokens must not count
    ours = grounding.token_focal_loss(garbage, targets, text_mask)
    valid = text_mask[:, None, :].expand_as(logits)
    reference = sigmoid_focal_loss(logits[valid], targets[valid], alpha=0.25, gamma=2.0, reduction="sum")
    assert torch.allclose(ours, reference)
    assert torch.allclose(ours, _focal_by_hand(logits[valid], targets[valid]), rtol=1e-5)


def _outputs_and_assignment(perfect: bool):
    """Two locations, one positive (matched to box [0, 0, 20, 10]) and one negative."""
    locations = torch.tensor([[5.0, 5.0], [50.0, 50.0]])
    target_distances = torch.tensor([[5.0, 5.0, 15.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    distances = target_distances.clone() if perfect else torch.tensor([[2.0, 1.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    distances[1] = torch.tensor([3.0, 3.0, 3.0, 3.0])  # the negative's prediction never matters
    centerness = grounding.centerness_targets(target_distances) * torch.tensor([1.0, 0.0])
    outputs = {"token_logits": torch.tensor([[[2.0, -1.0], [-3.0, 0.5]]], requires_grad=True),
               "box_distances": distances[None].requires_grad_(),
               "centerness_logits": torch.tensor([[0.3, -0.2]], requires_grad=True),
               "locations": locations, "text_mask": torch.tensor([[True, True]])}
    assigned = {"matched": torch.tensor([[0, -1]]), "token_targets": torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]),
                "box_targets": torch.tensor([[[0.0, 0.0, 20.0, 10.0], [0.0, 0.0, 0.0, 0.0]]]),
                "centerness_targets": centerness[None]}
    return outputs, assigned


def test_giou_loss_is_zero_for_perfect_boxes_and_positive_otherwise():
    outputs, assigned = _outputs_and_assignment(perfect=True)
    assert grounding.grounding_losses(outputs, assigned)["box_giou"].item() == pytest.approx(0.0, abs=1e-6)
    outputs, assigned = _outputs_and_assignment(perfect=False)
    assert grounding.grounding_losses(outputs, assigned)["box_giou"].item() > 0.1


def test_losses_are_normalised_by_the_positive_count():
    outputs, assigned = _outputs_and_assignment(perfect=False)
    losses = grounding.grounding_losses(outputs, assigned)
    focal = _focal_by_hand(outputs["token_logits"].detach().reshape(-1), assigned["token_targets"].reshape(-1))
    assert losses["token_focal"].item() == pytest.approx(focal.item(), rel=1e-5)  # one positive location
    target = assigned["centerness_targets"][0, 0]
    bce = -(target * torch.log(torch.sigmoid(torch.tensor(0.3))) + (1 - target) * torch.log(1 - torch.sigmoid(torch.tensor(0.3))))
    assert losses["centerness"].item() == pytest.approx(bce.item(), rel=1e-5)
    sum(losses.values()).backward()
    assert outputs["box_distances"].grad[0, 1].abs().sum() == 0  # negatives get no box gradient
    assert outputs["box_distances"].grad[0, 0].abs().sum() > 0


def test_no_positive_gives_zero_box_losses_and_finite_focal():
    outputs, assigned = _outputs_and_assignment(perfect=False)
    assigned = {**assigned, "matched": torch.tensor([[-1, -1]]), "token_targets": torch.zeros(1, 2, 2),
                "centerness_targets": torch.zeros(1, 2)}
    losses = grounding.grounding_losses(outputs, assigned)
    assert losses["box_giou"].item() == 0 and losses["centerness"].item() == 0
    assert torch.isfinite(losses["token_focal"]) and losses["token_focal"].item() > 0
    sum(losses.values()).backward()


def test_normaliser_is_the_mean_over_ranks_of_the_global_count(monkeypatch):
    losses_module = importlib.import_module("vlfw_fiber.grounding.losses")
    # simulate rank 0 of 2 whose partner has 3 more positives: the global count 1 + 3 over 2 ranks
    monkeypatch.setattr(losses_module, "all_reduce_sum", lambda t: t.add_(3.0))
    monkeypatch.setattr(losses_module, "world", lambda: (0, 2))
    outputs, assigned = _outputs_and_assignment(perfect=False)
    simulated = grounding.grounding_losses(outputs, assigned)
    monkeypatch.undo()
    alone = grounding.grounding_losses(outputs, assigned)
    assert simulated["token_focal"].item() == pytest.approx(alone["token_focal"].item() / 2, rel=1e-5)
    assert simulated["centerness"].item() == pytest.approx(alone["centerness"].item() / 2, rel=1e-5)
